//! What the cluster makes of its links' events: ids, fetch answers,
//! counters, logs, reconnects and health. The policy half of [`Cluster`];
//! the links report, this decides what each report costs.

use log::{debug, info, warn};

use super::error::LinkError;
use super::health::log_allowed;
use super::history::{FetchError, FetchId, FetchedHistory};
use super::link::{Command, LinkEvent, Role};
use super::{Cluster, IDS_KEY, RESERVE_RETRY};

impl Cluster {
    /// Acts on one event of a link (other than a message, which the
    /// caller hands out).
    pub(super) fn on_link_event(&mut self, role: Role, event: LinkEvent) {
        match event {
            LinkEvent::Ready => {
                self.driver(role).on_ready();
                self.update_health();
            }
            LinkEvent::Message => {}
            LinkEvent::IdsReserved { end, delta } => {
                let block = self.ids.on_reserved(end, delta);
                if block.is_empty() {
                    warn!("redis: the counter {IDS_KEY} went back to {end} (Redis lost its data?): moving it past this instance's ids");
                } else {
                    debug!("redis: ids {}..={} reserved", block.start, block.end - 1);
                }
            }
            LinkEvent::Refused { command, message } => self.on_refused(command, &message),
            LinkEvent::Fetched { id, result } => self.on_fetched(FetchId(id), result),
            LinkEvent::ScriptMissing(script) => {
                self.stats.script_reloads += 1;
                info!("redis: the {script} script is gone (SCRIPT FLUSH?): loading it again, and sending again what it refused");
            }
            LinkEvent::Unanswered(Command::Publish) => self.stats.publish_lost += 1,
            LinkEvent::Unanswered(Command::Fetch { id }) => {
                self.on_fetched(FetchId(id), Err(FetchError::LinkDown));
            }
            LinkEvent::Unanswered(Command::IncrBy { .. }) => self.ids.cancel(),
            LinkEvent::Unanswered(_) => {}
            LinkEvent::Dropped(dropped) => {
                if dropped.is_oversize() {
                    self.stats.oversize += 1;
                } else {
                    self.stats.malformed += 1;
                }
                self.health.warn_drop(self.now, &dropped);
            }
            LinkEvent::Failed(error) => self.on_failed(role, error),
        }
    }

    fn on_refused(&mut self, command: Command, message: &str) {
        match command {
            Command::Publish => {
                self.stats.publish_lost += 1;
                self.health.warn_drop(
                    self.now,
                    &format_args!("a message Redis refused ({message})"),
                );
            }
            Command::IncrBy { .. } => {
                self.pause_reserving();
                warn!("redis: {command}: {message}; new connections take ids from the local range");
            }
            _ => debug!("redis: {command}: {message}"),
        }
    }

    fn on_fetched(&mut self, id: FetchId, result: Result<FetchedHistory, FetchError>) {
        match &result {
            Ok(_) => self.stats.fetched += 1,
            Err(error) => {
                self.stats.fetch_errors += 1;
                if log_allowed(&mut self.last_fetch_warning, self.now) {
                    warn!("redis: a history fetch failed: {error}");
                } else {
                    debug!("redis: a history fetch failed: {error}");
                }
            }
        }
        if !self.fetches.answer(id, result) {
            debug!("redis: an answer to fetch {} that is not awaited", id.0);
        }
    }

    /// What a failure costs beyond the link: counters, the id request it
    /// refused, the socket, and maybe the cluster's health.
    fn on_failed(&mut self, role: Role, error: LinkError) {
        if error.is_malformed() {
            self.stats.malformed += 1;
        }
        match &error {
            LinkError::OversizedFrame { .. } => {
                self.stats.oversize += 1;
                self.health
                    .warn_drop(self.now, &"a frame over --max-message-size");
            }
            LinkError::ErrorReply {
                command: Some(Command::IncrBy { .. }),
                ..
            } => self.pause_reserving(),
            _ => {}
        }
        let (now, registry) = (self.now, &self.registry);
        match role {
            Role::Publisher => self.publisher.on_failed(error, registry, now),
            Role::Subscriber => self.subscriber.on_failed(error, registry, now),
        }
        self.update_health();
    }

    /// `INCRBY` was refused: ask again later, ids come from the local range
    /// meanwhile.
    fn pause_reserving(&mut self) {
        self.ids.cancel();
        self.reserve_paused_until = Some(self.now + RESERVE_RETRY);
    }

    fn update_health(&mut self) {
        let up = self.publisher.link.is_ready() && self.subscriber.link.is_ready();
        if up && !self.health.is_up() {
            self.reconnected = true;
        }
        let down = [&self.publisher, &self.subscriber]
            .into_iter()
            .filter(|driver| driver.is_down())
            .find_map(|driver| Some((driver.role(), driver.last_error()?)));
        if self.health.update(up, down, &self.url) {
            self.stats.outages += 1;
        }
    }
}
