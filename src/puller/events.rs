//! Events the puller publishes: one per `Ready` transition of a sync, one per failed
//! notification, and one per TrustPolicy it cannot read.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::Client;

/// Publishes Events as the puller.
///
/// Each Event goes through a new kube-runtime [`Recorder`]. A long-lived `Recorder` keeps
/// every Event it published in a map, to count a repeat within six minutes into a series;
/// it forgets them only when it publishes again, and the map never gives its table back:
/// about 3 MB held for good after the first cycle of 1,000 ArtifactSyncs, one `Applied`
/// each (heaptrack of `scripts/bench-cluster.sh scale`). The puller publishes on
/// transitions only, so a repeat within six minutes is rare and is a new Event instead.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
}

impl Events {
    /// Events reported by `reporter`, written through `client`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Publishes `event` on the object `reference`.
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        Recorder::new(self.client.clone(), self.reporter.clone())
            .publish(event, reference)
            .await
    }
}

/// The most bytes of an Event's `note` the API server accepts (`events.k8s.io/v1`: 1 KiB,
/// counted in bytes of UTF-8, not in characters).
pub const NOTE_MAX_BYTES: usize = 1024;

/// `message` cut to fit an Event's note ([`NOTE_MAX_BYTES`]): whole when it fits, else cut
/// on a character boundary and ended with `…`, so that the server never refuses the Event
/// (a refused Event is only logged, and the transition it reports would be lost).
pub fn event_note(message: &str) -> String {
    if message.len() <= NOTE_MAX_BYTES {
        return message.to_string();
    }
    const MORE: &str = "…";
    let mut end = NOTE_MAX_BYTES - MORE.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut note = message.get(..end).unwrap_or_default().to_string();
    note.push_str(MORE);
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_byte_note_is_cut_to_the_byte_limit_on_a_char_boundary() {
        let message = "≥".repeat(1000);
        let note = event_note(&message);
        assert!(note.len() <= NOTE_MAX_BYTES, "{} bytes", note.len());
        assert!(
            note.len() > NOTE_MAX_BYTES - 4,
            "cut too short: {}",
            note.len()
        );
        assert!(message.starts_with(note.trim_end_matches('…')));
    }

    #[test]
    fn a_short_note_is_kept_whole() {
        assert_eq!(
            event_note("applied sha256:ab… ≥ 1"),
            "applied sha256:ab… ≥ 1"
        );
        let exact = "a".repeat(NOTE_MAX_BYTES);
        assert_eq!(event_note(&exact), exact);
    }
}
