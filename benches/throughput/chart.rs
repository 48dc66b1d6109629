//! An SVG bar chart of the throughput bench's results, drawn from the JSON
//! lines the bench writes (`target/bench-results.json`): for each case,
//! wschat's figure next to the baseline's, and the ratio.

use std::fmt::Write as _;

const WIDTH: f64 = 720.0;
const LABEL: f64 = 190.0;
const BAR_MAX: f64 = 400.0;
const ROW: f64 = 74.0;

/// A string field of our own flat JSON line: `"key":"value"`.
fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":\"");
    let start = line.find(&pattern)? + pattern.len();
    let rest = &line[start..];
    Some(&rest[..rest.find('"')?])
}

/// Renders every result line that has `case`, `metric`, `wschat` and
/// `baseline` as one row of two bars.
pub fn render(json_lines: &str, number: impl Fn(&str, &str) -> Option<f64>) -> String {
    let rows: Vec<(&str, &str, f64, f64)> = json_lines
        .lines()
        .filter_map(|l| {
            Some((
                json_str(l, "case")?,
                json_str(l, "metric")?,
                number(l, "wschat")?,
                number(l, "baseline")?,
            ))
        })
        .collect();
    let height = 50.0 + ROW * rows.len() as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">wschat against a plain TCP \
         baseline, same run (higher is better)</text>\n"
    );
    for (i, (case, metric, ours, base)) in rows.iter().enumerate() {
        let top = 40.0 + ROW * i as f64;
        let scale = BAR_MAX / ours.max(*base).max(1.0);
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
        for (j, (name, value, colour)) in
            [("wschat", ours, "#2563eb"), ("baseline", base, "#9ca3af")]
                .iter()
                .enumerate()
        {
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
