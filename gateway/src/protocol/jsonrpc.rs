//! JSON-RPC 2.0 envelopes, parsed strictly: only the members JSON-RPC defines, with their
//! types, and exactly one of request, notification, response or error.

use serde_json::{Map, Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: an HTTP routing header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the request needs a client capability it did not declare.
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
/// 2026-07-28: the request's protocol revision is not served.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// Palisade: a request refused by policy (authorization, arguments, approvals, budgets).
pub const POLICY_REFUSED: i64 = -32050;
/// Palisade: a limit (rate, in-flight, size, budget) was hit; `data.retryAfterSeconds` says when.
pub const LIMIT_EXCEEDED: i64 = -32051;
/// Palisade: the server's answer failed validation and was withheld.
pub const UPSTREAM_INVALID: i64 = -32052;
/// Palisade: the server did not answer in time or could not be reached.
pub const UPSTREAM_UNAVAILABLE: i64 = -32053;
/// Palisade: the shared state store cannot be reached, so a call that changes state (or an
/// approval) is refused; `data.retryAfterSeconds` says when to retry.
pub const STATE_UNAVAILABLE: i64 = -32054;

/// The HTTP status the Streamable HTTP transport pairs with a JSON-RPC error code.
pub fn http_status(code: i64) -> u16 {
    match code {
        PARSE_ERROR
        | INVALID_REQUEST
        | INVALID_PARAMS
        | HEADER_MISMATCH
        | MISSING_CLIENT_CAPABILITY
        | UNSUPPORTED_PROTOCOL_VERSION => 400,
        METHOD_NOT_FOUND => 404,
        LIMIT_EXCEEDED => 429,
        STATE_UNAVAILABLE => 503,
        _ => 200,
    }
}

/// A JSON-RPC request id: a string or an integer (never null for requests).
pub type Id = Value;

/// Whether a message is the final one of its request: a result or an error.
pub fn is_final(m: &Value) -> bool {
    m.get("result").is_some() || m.get("error").is_some()
}

fn valid_id(v: &Value) -> bool {
    v.is_string() || v.as_i64().is_some() || v.as_u64().is_some()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request { id: Id, method: String, params: Option<Value> },
    Notification { method: String, params: Option<Value> },
    Result { id: Id, result: Value },
    Error { id: Option<Id>, error: Value },
}

/// Why an envelope is not a JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError {
    pub message: String,
    /// The id, when one could be read, so the error response can carry it.
    pub id: Option<Id>,
}

impl Message {
    /// Parses one envelope. Unknown top-level members are always refused: JSON-RPC defines
    /// them all, and a smuggled member is exactly what a strict proxy must not pass on.
    pub fn parse(v: &Value) -> Result<Message, EnvelopeError> {
        let obj = v.as_object().ok_or_else(|| EnvelopeError {
            message: "a JSON-RPC message is an object".into(),
            id: None,
        })?;
        let id = obj.get("id").filter(|i| valid_id(i)).cloned();
        let fail = |message: String| EnvelopeError { message, id: id.clone() };
        for key in obj.keys() {
            if !["jsonrpc", "id", "method", "params", "result", "error"].contains(&key.as_str()) {
                return Err(fail(format!("unknown member {key:?}")));
            }
        }
        if obj.get("jsonrpc") != Some(&Value::String("2.0".into())) {
            return Err(fail("jsonrpc must be \"2.0\"".into()));
        }
        if let Some(raw) = obj.get("id")
            && !valid_id(raw)
            && !(raw.is_null() && obj.contains_key("error"))
        {
            return Err(fail("id must be a string or an integer".into()));
        }
        let params = match obj.get("params") {
            None => None,
            Some(p @ Value::Object(_)) => Some(p.clone()),
            Some(_) => return Err(fail("params must be an object".into())),
        };
        match (obj.get("method"), obj.get("result"), obj.get("error")) {
            (Some(Value::String(m)), None, None) => Ok(match id {
                Some(id) => Message::Request { id, method: m.clone(), params },
                None if obj.contains_key("id") => {
                    return Err(fail("id must be a string or an integer".into()));
                }
                None => Message::Notification { method: m.clone(), params },
            }),
            (Some(_), None, None) => Err(fail("method must be a string".into())),
            (None, Some(r), None) if params.is_none() => match id {
                Some(id) if r.is_object() => Ok(Message::Result { id, result: r.clone() }),
                Some(_) => Err(fail("result must be an object".into())),
                None => Err(fail("a response needs the id of its request".into())),
            },
            (None, None, Some(e)) if params.is_none() => {
                let eo = e.as_object().ok_or_else(|| fail("error must be an object".into()))?;
                let code_ok = eo.get("code").is_some_and(|c| c.as_i64().is_some());
                let msg_ok = eo.get("message").is_some_and(Value::is_string);
                if !code_ok || !msg_ok {
                    return Err(fail("error needs an integer code and a string message".into()));
                }
                if let Some(k) =
                    eo.keys().find(|k| !["code", "message", "data"].contains(&k.as_str()))
                {
                    return Err(fail(format!("unknown member error.{k}")));
                }
                Ok(Message::Error { id, error: e.clone() })
            }
            _ => Err(fail("a message has exactly one of method, result or error".into())),
        }
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("jsonrpc".into(), "2.0".into());
        match self {
            Message::Request { id, method, params } => {
                m.insert("id".into(), id.clone());
                m.insert("method".into(), method.clone().into());
                if let Some(p) = params {
                    m.insert("params".into(), p.clone());
                }
            }
            Message::Notification { method, params } => {
                m.insert("method".into(), method.clone().into());
                if let Some(p) = params {
                    m.insert("params".into(), p.clone());
                }
            }
            Message::Result { id, result } => {
                m.insert("id".into(), id.clone());
                m.insert("result".into(), result.clone());
            }
            Message::Error { id, error } => {
                m.insert("id".into(), id.clone().unwrap_or(Value::Null));
                m.insert("error".into(), error.clone());
            }
        }
        Value::Object(m)
    }

    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            _ => None,
        }
    }

    pub fn id(&self) -> Option<&Id> {
        match self {
            Message::Request { id, .. } | Message::Result { id, .. } => Some(id),
            Message::Error { id, .. } => id.as_ref(),
            Message::Notification { .. } => None,
        }
    }
}

/// An error response.
pub fn error(id: Option<Id>, code: i64, message: impl Into<String>, data: Option<Value>) -> Value {
    let mut e = json!({ "code": code, "message": message.into() });
    if let Some(d) = data {
        e["data"] = d;
    }
    json!({ "jsonrpc": "2.0", "id": id.unwrap_or(Value::Null), "error": e })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Message, EnvelopeError> {
        Message::parse(&v)
    }

    #[test]
    fn parses_the_four_kinds() {
        assert!(matches!(
            parse(json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            Ok(Message::Request { .. })
        ));
        assert!(matches!(
            parse(json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Ok(Message::Notification { .. })
        ));
        assert!(matches!(
            parse(json!({"jsonrpc":"2.0","id":"a","result":{}})),
            Ok(Message::Result { .. })
        ));
        assert!(matches!(
            parse(json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}})),
            Ok(Message::Error { id: None, .. })
        ));
    }

    #[test]
    fn refuses_malformed_envelopes_keeping_the_id() {
        let cases = [
            json!({"jsonrpc":"2.0","id":1,"method":"ping","extra":true}),
            json!({"jsonrpc":"1.0","id":1,"method":"ping"}),
            json!({"id":1,"method":"ping"}),
            json!({"jsonrpc":"2.0","id":1.5,"method":"ping"}),
            json!({"jsonrpc":"2.0","id":1,"method":7}),
            json!({"jsonrpc":"2.0","id":1,"method":"x","params":[1]}),
            json!({"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}),
            json!({"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}),
            json!({"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","stack":"..."}}),
            json!({"jsonrpc":"2.0","id":1,"result":[]}),
            json!([1, 2]),
        ];
        for c in cases {
            let e = parse(c.clone()).expect_err(&c.to_string());
            if c.get("id") == Some(&json!(1)) {
                assert_eq!(e.id, Some(json!(1)), "{c}");
            }
        }
    }

    #[test]
    fn errors_map_to_http_statuses() {
        assert_eq!(http_status(METHOD_NOT_FOUND), 404);
        assert_eq!(http_status(HEADER_MISMATCH), 400);
        assert_eq!(http_status(INTERNAL_ERROR), 200);
        let e = error(Some(json!(3)), INVALID_PARAMS, "bad", Some(json!({"x": 1})));
        assert_eq!(e["error"]["data"]["x"], 1);
        assert_eq!(e["id"], 3);
    }
}
