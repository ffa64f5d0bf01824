//! `LISTEN` / `NOTIFY` / `UNLISTEN` between sessions, as PostgreSQL has them, and the
//! channel `kp_alerts` on which the alerts stage announces each state change.
//!
//! Each connection has a [`Mailbox`]; the wire layer delivers what arrives in it as a
//! NotificationResponse whenever the session is idle outside a transaction (PostgreSQL
//! delivers between transactions too). A notification published with a visibility test
//! (an alert's) reaches only the listening users who may see it. Clients may not
//! `NOTIFY kp_alerts` (42501): its payloads are the server's.
//!
//! Invariant: knows no wire or engine types; publishing never blocks.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;

/// The channel alert transitions are published on.
pub const ALERTS_CHANNEL: &str = "kp_alerts";

/// PostgreSQL's limit on a NOTIFY payload.
pub const MAX_PAYLOAD: usize = 7999;

/// A notification for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The channel.
    pub channel: String,
    /// The payload.
    pub payload: String,
    /// The process id of the session that sent it (0 for the server itself).
    pub pid: i32,
}

/// The notifications of one connection.
#[derive(Debug)]
pub struct Mailbox {
    listener: Mutex<Option<(String, i32)>>,
    channels: Mutex<BTreeSet<String>>,
    tx: mpsc::UnboundedSender<Note>,
}

impl Mailbox {
    /// Start listening on `channel` as `user` (session `pid`).
    pub fn listen(&self, user: &str, pid: i32, channel: &str) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some((user.to_string(), pid));
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.to_string());
    }

    /// Stop listening on `channel`, or on every channel (`None`).
    pub fn unlisten(&self, channel: Option<&str>) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        match channel {
            Some(c) => {
                channels.remove(c);
            }
            None => channels.clear(),
        }
    }

    /// The channels listened on.
    pub fn channels(&self) -> Vec<String> {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn listening(&self, channel: &str) -> Option<String> {
        if !self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(channel)
        {
            return None;
        }
        self.listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(user, _)| user.clone())
    }
}

/// Every connection's mailbox.
#[derive(Debug, Default)]
pub struct Hub {
    boxes: Mutex<Vec<Weak<Mailbox>>>,
}

impl Hub {
    /// A new hub.
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// A mailbox for a new connection, and the receiving end the connection reads.
    pub fn mailbox(&self) -> (Arc<Mailbox>, mpsc::UnboundedReceiver<Note>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mailbox = Arc::new(Mailbox {
            listener: Mutex::new(None),
            channels: Mutex::new(BTreeSet::new()),
            tx,
        });
        let mut boxes = self.boxes.lock().unwrap_or_else(|p| p.into_inner());
        boxes.retain(|b| b.strong_count() > 0);
        boxes.push(Arc::downgrade(&mailbox));
        (mailbox, rx)
    }

    /// Send `payload` on `channel` to every session listening on it whose user
    /// `visible` admits; returns how many received it.
    pub fn publish(
        &self,
        channel: &str,
        payload: &str,
        pid: i32,
        visible: impl Fn(&str) -> bool,
    ) -> usize {
        let boxes: Vec<Arc<Mailbox>> = self
            .boxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut sent = 0;
        for mailbox in boxes {
            if let Some(user) = mailbox.listening(channel)
                && visible(&user)
            {
                let note = Note {
                    channel: channel.to_string(),
                    payload: payload.to_string(),
                    pid,
                };
                if mailbox.tx.send(note).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listeners_that_may_see_it_receive_it() {
        let hub = Hub::new();
        let (east, mut east_rx) = hub.mailbox();
        let (west, mut west_rx) = hub.mailbox();
        let (_idle, mut idle_rx) = hub.mailbox();
        east.listen("manager_east", 1, "kp_alerts");
        west.listen("manager_west", 2, "kp_alerts");
        let sent = hub.publish("kp_alerts", "{}", 0, |user| user == "manager_east");
        assert_eq!(sent, 1);
        assert_eq!(east_rx.try_recv().unwrap().payload, "{}");
        assert!(west_rx.try_recv().is_err());
        assert!(idle_rx.try_recv().is_err());
        east.unlisten(None);
        assert_eq!(hub.publish("kp_alerts", "x", 0, |_| true), 1);
        assert!(east_rx.try_recv().is_err());
    }
}
