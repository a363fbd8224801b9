//! A bounded Server-Sent Events parser (WHATWG event-stream format) and encoder.

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SSE event larger than {0} bytes")]
pub struct TooLarge(pub usize);

/// Incremental parser: feed bytes as they arrive, take complete events.
pub struct Parser {
    buf: Vec<u8>,
    current: Event,
    has_data: bool,
    max_event: usize,
}

impl Parser {
    pub fn new(max_event: usize) -> Parser {
        Parser { buf: Vec::new(), current: Event::default(), has_data: false, max_event }
    }

    /// Adds bytes; returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, TooLarge> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // Any line longer than an event may be is refused, complete or not, so the verdict
            // does not depend on how the bytes were split (comments and unknown fields too).
            if nl > self.max_event {
                return Err(TooLarge(self.max_event));
            }
            // A CR LF pair counts as one line ending.
            let mut end = nl + 1;
            if self.buf[nl] == b'\r' {
                if nl + 1 == self.buf.len() {
                    break; // wait: the LF may be in the next chunk
                }
                if self.buf[nl + 1] == b'\n' {
                    end = nl + 2;
                }
            }
            let line = String::from_utf8_lossy(&self.buf[..nl]).into_owned();
            self.buf.drain(..end);
            if line.is_empty() {
                if self.has_data {
                    let mut e = std::mem::take(&mut self.current);
                    if e.data.ends_with('\n') {
                        e.data.pop();
                    }
                    out.push(e);
                } else {
                    self.current = Event::default();
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue; // comment (keep-alive)
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "data" => {
                    self.current.data.push_str(&value);
                    self.current.data.push('\n');
                    self.has_data = true;
                }
                "event" => self.current.event = Some(value),
                "id" if !value.contains('\0') => self.current.id = Some(value),
                _ => {}
            }
            if self.current.data.len() > self.max_event {
                return Err(TooLarge(self.max_event));
            }
        }
        // A CR at the end waits for a possible LF: it ends the line, it is not part of it.
        let pending = self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'));
        if pending > self.max_event {
            return Err(TooLarge(self.max_event));
        }
        Ok(out)
    }
}

/// Encodes one event (data may span lines).
pub fn encode(event: Option<&str>, id: Option<&str>, data: &str) -> String {
    let mut out = String::new();
    if let Some(i) = id {
        out.push_str("id: ");
        out.push_str(i);
        out.push('\n');
    }
    if let Some(e) = event {
        out.push_str("event: ");
        out.push_str(e);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `make fuzz` (target sse): a line of exactly the bound whose CR arrived at the
    /// end of a chunk was refused, though the same bytes in one chunk were accepted.
    #[test]
    fn a_line_of_the_bound_cut_after_its_cr_is_accepted() {
        let line = format!("data: {}", "x".repeat(10));
        let whole = format!("{line}\r\n\r\n");
        let bound = line.len();
        assert_eq!(Parser::new(bound).feed(whole.as_bytes()).map(|e| e.len()), Ok(1));
        let mut cut = Parser::new(bound);
        let at = line.len() + 1;
        assert_eq!(cut.feed(&whole.as_bytes()[..at]), Ok(vec![]));
        assert_eq!(cut.feed(&whole.as_bytes()[at..]).map(|e| e.len()), Ok(1));
        // One byte more than the bound is refused however it arrives.
        assert!(Parser::new(bound - 1).feed(whole.as_bytes()).is_err());
        let mut cut = Parser::new(bound - 1);
        assert!(cut.feed(&whole.as_bytes()[..at]).is_err());
    }

    #[test]
    fn parses_across_chunk_boundaries_and_line_endings() {
        let mut p = Parser::new(1024);
        assert!(p.feed(b"event: message\r").unwrap().is_empty());
        assert!(p.feed(b"\nid: 7\ndata: {\"a\":").unwrap().is_empty());
        let events = p.feed(b"1}\n\n: keep-alive\n\ndata: x\ndata: y\n\n").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0],
            Event { event: Some("message".into()), data: "{\"a\":1}".into(), id: Some("7".into()) }
        );
        assert_eq!(events[1].data, "x\ny");
    }

    #[test]
    fn bounds_the_event_size() {
        let mut p = Parser::new(16);
        assert!(p.feed(b"data: 0123456789abcdef0123\n").is_err());
        let mut p = Parser::new(16);
        assert!(p.feed(&[b'x'; 64]).is_err(), "an unterminated line is bounded too");
    }

    #[test]
    fn encodes_what_it_parses() {
        let text = encode(Some("message"), Some("s-1"), "line1\nline2");
        let events = Parser::new(1024).feed(text.as_bytes()).unwrap();
        assert_eq!(
            events[0],
            Event {
                event: Some("message".into()),
                data: "line1\nline2".into(),
                id: Some("s-1".into())
            }
        );
    }
}
