//! SVG bar charts of the benches' results, drawn from the JSON lines they
//! write. [`render`]: the throughput bench's (`target/bench-results.json`),
//! for each case the measured side's figure next to the one it is
//! compared against (wschat and the baseline, wss:// and ws://, or JSON
//! and classic members), and the ratio. [`render_groups`]: groups of bars
//! each drawn to its own scale, such as the transports comparison's
//! figures per transport.

use std::fmt::Write as _;

const WIDTH: f64 = 720.0;
const LABEL: f64 = 190.0;
const BAR_MAX: f64 = 400.0;
const ROW: f64 = 74.0;

/// A string field of our own flat JSON line: `"key":"value"`.
pub fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":\"");
    let start = line.find(&pattern)? + pattern.len();
    let rest = &line[start..];
    Some(&rest[..rest.find('"')?])
}

/// One row of the chart: a case, its metric, and the two sides.
struct Row<'a> {
    case: &'a str,
    metric: &'a str,
    sides: [(&'a str, f64); 2],
}

/// Reads a row from a result line that has `case`, `metric`, and the
/// figures of the sides `subject` and `reference` name (`wschat` and
/// `baseline` when those are missing).
fn row<'a>(line: &'a str, number: &impl Fn(&str, &str) -> Option<f64>) -> Option<Row<'a>> {
    let ours = json_str(line, "subject").unwrap_or("wschat");
    let theirs = json_str(line, "reference").unwrap_or("baseline");
    Some(Row {
        case: json_str(line, "case")?,
        metric: json_str(line, "metric")?,
        sides: [(ours, number(line, ours)?), (theirs, number(line, theirs)?)],
    })
}

/// Renders every result line [`row`] can read as one row of two bars.
pub fn render(json_lines: &str, number: impl Fn(&str, &str) -> Option<f64>) -> String {
    let rows: Vec<Row<'_>> = json_lines.lines().filter_map(|l| row(l, &number)).collect();
    let height = 50.0 + ROW * rows.len() as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">wschat against a plain TCP \
         baseline, wss:// against ws://, JSON against classic, same run (higher is better)</text>\n"
    );
    for (
        i,
        Row {
            case,
            metric,
            sides,
        },
    ) in rows.iter().enumerate()
    {
        let top = 40.0 + ROW * i as f64;
        let [(_, ours), (_, base)] = *sides;
        let scale = BAR_MAX / ours.max(base).max(1.0);
        let _ = write!(
            svg,
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{case}</text>\n\
             <text x=\"10\" y=\"{}\" fill=\"#555\">{metric}</text>\n\
             <text x=\"10\" y=\"{}\" fill=\"#555\">ratio {:.2}</text>\n",
            top + 18.0,
            top + 36.0,
            top + 54.0,
            ours / base
        );
        for (j, ((name, value), colour)) in sides.iter().zip(["#2563eb", "#9ca3af"]).enumerate() {
            let y = top + 8.0 + 26.0 * j as f64;
            let w = (*value * scale).max(1.0);
            let _ = write!(
                svg,
                "<rect x=\"{LABEL}\" y=\"{y}\" width=\"{w:.1}\" height=\"20\" fill=\"{colour}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\">{name} {value:.0}</text>\n",
                LABEL + w + 6.0,
                y + 15.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// One group of bars, drawn to its own scale (its largest bar is full
/// width): a title, a note under it, and the bars.
pub struct Group {
    /// The group's title (bold).
    pub title: String,
    /// A line under the title (what the figures are, which way is better).
    pub note: String,
    /// Each bar: its label, its value, and the text written after it.
    pub bars: Vec<(String, f64, String)>,
}

/// Height of one bar's row in a group.
const BAR_ROW: f64 = 22.0;

/// Renders `groups` one under the other, under `title`; the bars of a
/// group take the colours of `palette` in turn.
pub fn render_groups(title: &str, groups: &[Group], palette: &[&str]) -> String {
    let height: f64 = 50.0
        + groups
            .iter()
            .map(|g| 48.0 + BAR_ROW * g.bars.len() as f64)
            .sum::<f64>();
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    );
    let mut top = 40.0;
    for group in groups {
        let _ = write!(
            svg,
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>\n\
             <text x=\"10\" y=\"{}\" fill=\"#555\">{}</text>\n",
            top + 16.0,
            escape(&group.title),
            top + 34.0,
            escape(&group.note)
        );
        let largest = group
            .bars
            .iter()
            .map(|b| b.1)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let scale = if largest > 0.0 {
            BAR_MAX / largest
        } else {
            0.0
        };
        for (i, (label, value, shown)) in group.bars.iter().enumerate() {
            let y = top + 42.0 + BAR_ROW * i as f64;
            let w = if value.is_finite() {
                (value * scale).max(1.0)
            } else {
                0.0
            };
            let colour = palette[i % palette.len()];
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
                 <rect x=\"{LABEL}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"16\" fill=\"{colour}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
                LABEL - 8.0,
                y + 12.5,
                escape(label),
                LABEL + w + 6.0,
                y + 12.5,
                escape(shown)
            );
        }
        top += 48.0 + BAR_ROW * group.bars.len() as f64;
    }
    svg.push_str("</svg>\n");
    svg
}

/// `text` with the characters XML gives a meaning escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
