//! Fetches asked and not yet handed back, in the order asked.
//!
//! Redis answers one connection in order, but a fetch sent again after a
//! `NOSCRIPT` may be answered after one asked later; answers are held here
//! until every earlier fetch has its own, so that the owner gets them in
//! the order it asked. Every id handed out gets exactly one answer: the
//! link reports a fetch lost with its connection as unanswered, which is
//! answered with [`FetchError::LinkDown`].

use std::collections::VecDeque;

use super::history::{FetchError, FetchId, Fetched, FetchedHistory};

/// The most fetches awaited at once; more are refused (the owner falls
/// back as when degraded), so that a flood of joins cannot queue without
/// bound behind a slow Redis.
pub const MAX_PENDING: usize = 1024;

#[derive(Debug)]
struct Pending {
    id: FetchId,
    room: String,
    result: Option<Result<FetchedHistory, FetchError>>,
}

/// The fetches awaited, oldest first.
#[derive(Debug, Default)]
pub struct Fetches {
    pending: VecDeque<Pending>,
    next_id: u64,
}

impl Fetches {
    /// None awaited.
    pub fn new() -> Fetches {
        Fetches::default()
    }

    /// Fetches asked and not handed back.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is awaited.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A new id for a fetch of `room`, or `None` at [`MAX_PENDING`].
    pub fn ask(&mut self, room: &str) -> Option<FetchId> {
        if self.pending.len() >= MAX_PENDING {
            return None;
        }
        self.next_id += 1;
        let id = FetchId(self.next_id);
        self.pending.push_back(Pending {
            id,
            room: room.to_string(),
            result: None,
        });
        Some(id)
    }

    /// Takes back the last id asked, whose command could not be queued.
    pub fn cancel_last(&mut self, id: FetchId) {
        if self.pending.back().is_some_and(|p| p.id == id) {
            self.pending.pop_back();
        }
    }

    /// Records the answer to `id`. Returns `false` for an id not awaited
    /// or answered already (the answer is ignored).
    pub fn answer(&mut self, id: FetchId, result: Result<FetchedHistory, FetchError>) -> bool {
        let slot = self.pending.iter_mut().find(|p| p.id == id);
        match slot {
            Some(pending) if pending.result.is_none() => {
                pending.result = Some(result);
                true
            }
            _ => false,
        }
    }

    /// The oldest fetch, once it is answered.
    pub fn poll(&mut self) -> Option<Fetched> {
        self.pending.front()?.result.as_ref()?;
        let Pending { id, room, result } = self.pending.pop_front()?;
        Some(Fetched {
            id,
            room,
            result: result?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(head: u64) -> Result<FetchedHistory, FetchError> {
        Ok(FetchedHistory {
            epoch: "e".into(),
            head,
            entries: Vec::new(),
        })
    }

    #[test]
    fn answers_come_out_in_the_order_asked() {
        let mut fetches = Fetches::new();
        let a = fetches.ask("a").unwrap();
        let b = fetches.ask("b").unwrap();
        assert_ne!(a, b);
        assert!(fetches.answer(b, history(2)));
        assert_eq!(fetches.poll(), None, "a is not answered yet");
        assert!(fetches.answer(a, Err(FetchError::LinkDown)));
        let first = fetches.poll().unwrap();
        assert_eq!((first.id, first.room.as_str()), (a, "a"));
        assert_eq!(first.result, Err(FetchError::LinkDown));
        let second = fetches.poll().unwrap();
        assert_eq!((second.id, second.result), (b, history(2)));
        assert_eq!(fetches.poll(), None);
        assert!(fetches.is_empty());
    }

    #[test]
    fn each_id_is_answered_once() {
        let mut fetches = Fetches::new();
        let a = fetches.ask("a").unwrap();
        assert!(fetches.answer(a, history(1)));
        assert!(!fetches.answer(a, history(9)), "answered already");
        assert!(!fetches.answer(FetchId(99), history(9)), "never asked");
        assert_eq!(fetches.poll().unwrap().result, history(1));
        assert!(!fetches.answer(a, history(9)), "handed back already");
    }

    #[test]
    fn pending_fetches_are_bounded() {
        let mut fetches = Fetches::new();
        let ids: Vec<FetchId> = (0..MAX_PENDING)
            .map(|_| fetches.ask("r").unwrap())
            .collect();
        assert_eq!(fetches.ask("r"), None);
        assert_eq!(fetches.len(), MAX_PENDING);
        fetches.answer(ids[0], history(0));
        fetches.poll().unwrap();
        assert!(
            fetches.ask("r").is_some(),
            "room again once one is handed back"
        );
        let last = fetches.ask("x");
        assert_eq!(last, None);
        let id = FetchId(ids.last().unwrap().0 + 1);
        fetches.cancel_last(id);
        assert_eq!(fetches.len(), MAX_PENDING - 1);
    }
}
