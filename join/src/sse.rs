//! A sans-IO decoder of server-sent events (the `text/event-stream` format
//! of the HTML standard), for `jamd`'s member stream: feed it the bytes of
//! the response body as they arrive, get back the complete events.
//!
//! It keeps what the member stream uses: `event:` and `data:` fields
//! (several `data:` lines join with `\n`), comment lines (keep-alives) and
//! blank-line dispatch, with `\n`, `\r\n` or `\r` line ends. `id:` and
//! `retry:` are read and ignored. A line longer than [`MAX_LINE`] or an
//! event whose data grows past [`MAX_DATA`] is an error: a hostile or
//! broken server cannot make the client buffer without bound.

/// The longest line accepted, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// The most data one event may carry, in bytes.
pub const MAX_DATA: usize = 4 << 20;

/// Why the stream cannot be decoded further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// A line did not end within [`MAX_LINE`] bytes.
    #[error("event stream line longer than {0} bytes")]
    LineTooLong(usize),
    /// An event's data grew past [`MAX_DATA`] bytes.
    #[error("event stream event of more than {0} bytes of data")]
    EventTooLarge(usize),
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `event:` name (`message` when it had none).
    pub event: String,
    /// Its data lines joined with `\n` (invalid UTF-8 replaced).
    pub data: String,
}

/// The decoder's state between chunks.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one
    /// belongs to that line end.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    failed: Option<SseError>,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        SseDecoder::default()
    }

    /// Decodes `bytes` (any split of the stream) and returns the events
    /// completed in them. After an error every later call returns it too.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut out = Vec::new();
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Err(e) = self.line_done(&line, &mut out) {
                        self.failed = Some(e.clone());
                        return Err(e);
                    }
                }
                _ if self.line.len() >= MAX_LINE => {
                    let e = SseError::LineTooLong(MAX_LINE);
                    self.failed = Some(e.clone());
                    return Err(e);
                }
                _ => self.line.push(b),
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if std::mem::take(&mut self.has_data) {
                out.push(SseEvent {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                });
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => self.event = value.into_owned(),
            b"data" => {
                if self.data.len() + value.len() + 1 > MAX_DATA {
                    return Err(SseError::EventTooLarge(MAX_DATA));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The fuzz entry point (`fuzz/fuzz_targets/member_stream.rs` and the
/// corpus replay test): the first byte picks where the rest is split in
/// two chunks; decoding must not panic, the split must not change the
/// events, and every `members` event's data goes through
/// [`crate::parse_member_list`] (which may refuse it, never panic).
pub fn fuzz_member_stream(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(first).min(rest.len());
    let whole = SseDecoder::new().push(rest);
    let mut d = SseDecoder::new();
    let split = d.push(&rest[..at]).and_then(|mut events| {
        events.extend(d.push(&rest[at..])?);
        Ok(events)
    });
    if let (Ok(a), Ok(b)) = (&whole, &split) {
        assert_eq!(a, b, "splitting at {at} changed the events");
    }
    for e in whole.unwrap_or_default() {
        if e.event == "members" {
            let _ = crate::parse_member_list(&e.data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn decodes_what_axum_sends_split_anywhere() {
        let stream =
            b":\n\nevent: members\ndata: [1,2]\n\n: keep-alive\n\nevent:x\ndata:a\ndata: b\n\n";
        let want = vec![ev("members", "[1,2]"), ev("x", "a\nb")];
        for split in 0..stream.len() {
            let mut d = SseDecoder::new();
            let mut got = d.push(&stream[..split]).unwrap();
            got.extend(d.push(&stream[split..]).unwrap());
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn crlf_and_cr_line_ends_and_unnamed_events() {
        let mut d = SseDecoder::new();
        let got = d
            .push(b"data: one\r\n\r\ndata: two\r\rid: 7\nretry: 5\ndata\n\n")
            .unwrap();
        assert_eq!(
            got,
            vec![
                ev("message", "one"),
                ev("message", "two"),
                ev("message", "")
            ]
        );
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut d = SseDecoder::new();
        assert_eq!(d.push(b"event: members\n\n").unwrap(), vec![]);
        // The name does not leak into the next event.
        assert_eq!(d.push(b"data: 1\n\n").unwrap(), vec![ev("message", "1")]);
    }

    #[test]
    fn endless_lines_and_events_are_refused_and_stay_refused() {
        let mut d = SseDecoder::new();
        let chunk = vec![b'a'; 64 * 1024];
        let mut err = None;
        for _ in 0..=MAX_LINE / chunk.len() {
            if let Err(e) = d.push(&chunk) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(SseError::LineTooLong(MAX_LINE)));
        assert_eq!(d.push(b"\n\n"), Err(SseError::LineTooLong(MAX_LINE)));

        let mut d = SseDecoder::new();
        let line = format!("data: {}\n", "b".repeat(1000));
        let mut err = None;
        for _ in 0..=MAX_DATA / 1000 {
            if let Err(e) = d.push(line.as_bytes()) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(SseError::EventTooLarge(MAX_DATA)));
    }
}
