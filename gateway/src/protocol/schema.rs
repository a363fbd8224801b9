//! Palisade's own definition of MCP messages, per revision, and the validator that checks
//! params, results and notifications against it.
//!
//! Every field of a defined object is type-checked. Unknown fields are refused (in strict mode)
//! at the three places Palisade closes objects by policy: the top level of `params` of known
//! methods, the top level of results, and notification params. Nested objects (tools, content
//! blocks, resources) and extension points (`_meta`, `arguments`, `structuredContent`,
//! `inputSchema`/`outputSchema`, `experimental`, `extensions`, capabilities) stay open, as the
//! MCP schema leaves them. The tests check this definition against the official JSON schemas.

use serde_json::Value;

use super::revision::{R2024, R2025_03, R2025_06, R2025_11, R2026, Rev};

/// JSON types of MCP fields.
#[derive(Debug)]
pub enum Ty {
    Str,
    Int,
    Num,
    Bool,
    /// Anything (JSON-RPC error data, logging data).
    Any,
    /// An object with no defined members: an extension point.
    Open,
    /// An object whose values are strings (prompt arguments).
    StrMap,
    /// A string or an integer (request ids, progress tokens).
    IdLike,
    Enum(&'static [&'static str]),
    Obj(&'static Shape),
    Arr(&'static Ty),
    /// Objects distinguished by their `type` member.
    Tagged(&'static [Variant]),
    /// The first alternative that matches.
    Either(&'static [&'static Ty]),
    /// `_meta` of a request: in the stateless era it carries the required envelope.
    RequestMeta,
}

#[derive(Debug)]
pub struct Variant {
    pub tag: &'static str,
    pub shape: &'static Shape,
    pub since: Rev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Req {
    No,
    Yes,
    /// Required from this revision on (optional before).
    Since(Rev),
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub req: Req,
    pub since: Rev,
    /// Last revision that has the field.
    pub until: Rev,
}

impl Field {
    const fn new(name: &'static str, ty: Ty) -> Field {
        Field { name, ty, req: Req::No, since: R2024, until: R2026 }
    }
    const fn req(mut self) -> Field {
        self.req = Req::Yes;
        self
    }
    const fn req_since(mut self, r: Rev) -> Field {
        self.req = Req::Since(r);
        self
    }
    const fn since(mut self, r: Rev) -> Field {
        self.since = r;
        self
    }
    const fn until(mut self, r: Rev) -> Field {
        self.until = r;
        self
    }
    pub fn present_in(&self, rev: Rev) -> bool {
        self.since <= rev && rev <= self.until
    }
    pub fn required_in(&self, rev: Rev) -> bool {
        match self.req {
            Req::No => false,
            Req::Yes => true,
            Req::Since(r) => rev >= r,
        }
    }
}

#[derive(Debug)]
pub struct Shape {
    pub name: &'static str,
    pub fields: &'static [Field],
}

const fn f(name: &'static str, ty: Ty) -> Field {
    Field::new(name, ty)
}

const META: Field = f("_meta", Ty::Open);
const LOGGING_LEVELS: &[&str] =
    &["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];
const ROLE: Ty = Ty::Enum(&["user", "assistant"]);

// --- common objects -------------------------------------------------------------------------

pub static ICON: Shape = Shape {
    name: "Icon",
    fields: &[
        f("src", Ty::Str).req(),
        f("mimeType", Ty::Str),
        f("sizes", Ty::Arr(&Ty::Str)),
        f("theme", Ty::Enum(&["light", "dark"])),
    ],
};
pub static IMPLEMENTATION: Shape = Shape {
    name: "Implementation",
    fields: &[
        f("name", Ty::Str).req(),
        f("version", Ty::Str).req(),
        f("title", Ty::Str).since(R2025_06),
        f("description", Ty::Str).since(R2025_11),
        f("icons", Ty::Arr(&Ty::Obj(&ICON))).since(R2025_11),
        f("websiteUrl", Ty::Str).since(R2025_11),
    ],
};
pub static ANNOTATIONS: Shape = Shape {
    name: "Annotations",
    fields: &[
        f("audience", Ty::Arr(&ROLE)),
        f("priority", Ty::Num),
        f("lastModified", Ty::Str).since(R2025_06),
    ],
};
pub static TEXT_CONTENT: Shape = Shape {
    name: "TextContent",
    fields: &[
        f("type", Ty::Str).req(),
        f("text", Ty::Str).req(),
        f("annotations", Ty::Obj(&ANNOTATIONS)),
        META,
    ],
};
pub static IMAGE_CONTENT: Shape = Shape {
    name: "ImageContent",
    fields: &[
        f("type", Ty::Str).req(),
        f("data", Ty::Str).req(),
        f("mimeType", Ty::Str).req(),
        f("annotations", Ty::Obj(&ANNOTATIONS)),
        META,
    ],
};
pub static TEXT_RESOURCE: Shape = Shape {
    name: "TextResourceContents",
    fields: &[f("uri", Ty::Str).req(), f("text", Ty::Str).req(), f("mimeType", Ty::Str), META],
};
pub static BLOB_RESOURCE: Shape = Shape {
    name: "BlobResourceContents",
    fields: &[f("uri", Ty::Str).req(), f("blob", Ty::Str).req(), f("mimeType", Ty::Str), META],
};
static RESOURCE_CONTENTS: Ty = Ty::Either(&[&Ty::Obj(&TEXT_RESOURCE), &Ty::Obj(&BLOB_RESOURCE)]);
pub static EMBEDDED_RESOURCE: Shape = Shape {
    name: "EmbeddedResource",
    fields: &[
        f("type", Ty::Str).req(),
        f("resource", Ty::Either(&[&Ty::Obj(&TEXT_RESOURCE), &Ty::Obj(&BLOB_RESOURCE)])).req(),
        f("annotations", Ty::Obj(&ANNOTATIONS)),
        META,
    ],
};
pub static RESOURCE_LINK: Shape = Shape {
    name: "ResourceLink",
    fields: &[
        f("type", Ty::Str).req(),
        f("uri", Ty::Str).req(),
        f("name", Ty::Str).req(),
        f("title", Ty::Str),
        f("description", Ty::Str),
        f("mimeType", Ty::Str),
        f("size", Ty::Int),
        f("icons", Ty::Arr(&Ty::Obj(&ICON))),
        f("annotations", Ty::Obj(&ANNOTATIONS)),
        META,
    ],
};
static CONTENT_VARIANTS: [Variant; 5] = [
    Variant { tag: "text", shape: &TEXT_CONTENT, since: R2024 },
    Variant { tag: "image", shape: &IMAGE_CONTENT, since: R2024 },
    Variant { tag: "audio", shape: &IMAGE_CONTENT, since: R2025_03 },
    Variant { tag: "resource", shape: &EMBEDDED_RESOURCE, since: R2024 },
    Variant { tag: "resource_link", shape: &RESOURCE_LINK, since: R2025_06 },
];
pub static CONTENT: Ty = Ty::Tagged(&CONTENT_VARIANTS);

pub static TOOL_ANNOTATIONS: Shape = Shape {
    name: "ToolAnnotations",
    fields: &[
        f("title", Ty::Str),
        f("readOnlyHint", Ty::Bool),
        f("destructiveHint", Ty::Bool),
        f("idempotentHint", Ty::Bool),
        f("openWorldHint", Ty::Bool),
    ],
};
pub static TOOL: Shape = Shape {
    name: "Tool",
    fields: &[
        f("name", Ty::Str).req(),
        f("title", Ty::Str).since(R2025_06),
        f("description", Ty::Str),
        f("inputSchema", Ty::Open).req(),
        f("outputSchema", Ty::Open).since(R2025_06),
        f("annotations", Ty::Obj(&TOOL_ANNOTATIONS)).since(R2025_03),
        f("icons", Ty::Arr(&Ty::Obj(&ICON))).since(R2025_11),
        f("execution", Ty::Open).since(R2025_11).until(R2025_11),
        META,
    ],
};
pub static RESOURCE: Shape = Shape {
    name: "Resource",
    fields: &[
        f("uri", Ty::Str).req(),
        f("name", Ty::Str).req(),
        f("title", Ty::Str).since(R2025_06),
        f("description", Ty::Str),
        f("mimeType", Ty::Str),
        f("size", Ty::Int),
        f("icons", Ty::Arr(&Ty::Obj(&ICON))).since(R2025_11),
        f("annotations", Ty::Obj(&ANNOTATIONS)),
        META,
    ],
};
pub static RESOURCE_TEMPLATE: Shape = Shape {
    name: "ResourceTemplate",
    fields: &[
        f("uriTemplate", Ty::Str).req(),
        f("name", Ty::Str).req(),
        f("title", Ty::Str).since(R2025_06),
        f("description", Ty::Str),
        f("mimeType", Ty::Str),
        f("icons", Ty::Arr(&Ty::Obj(&ICON))).since(R2025_11),
        f("annotations", Ty::Obj(&ANNOTATIONS)),
        META,
    ],
};
pub static PROMPT_ARGUMENT: Shape = Shape {
    name: "PromptArgument",
    fields: &[
        f("name", Ty::Str).req(),
        f("title", Ty::Str).since(R2025_06),
        f("description", Ty::Str),
        f("required", Ty::Bool),
    ],
};
pub static PROMPT: Shape = Shape {
    name: "Prompt",
    fields: &[
        f("name", Ty::Str).req(),
        f("title", Ty::Str).since(R2025_06),
        f("description", Ty::Str),
        f("arguments", Ty::Arr(&Ty::Obj(&PROMPT_ARGUMENT))),
        f("icons", Ty::Arr(&Ty::Obj(&ICON))).since(R2025_11),
        META,
    ],
};
pub static PROMPT_MESSAGE: Shape = Shape {
    name: "PromptMessage",
    fields: &[f("role", ROLE).req(), f("content", Ty::Tagged(&CONTENT_VARIANTS)).req()],
};
pub static ROOT: Shape =
    Shape { name: "Root", fields: &[f("uri", Ty::Str).req(), f("name", Ty::Str), META] };
pub static CLIENT_CAPABILITIES: Shape = Shape {
    name: "ClientCapabilities",
    fields: &[
        f("experimental", Ty::Open),
        f("roots", Ty::Open),
        f("sampling", Ty::Open),
        f("elicitation", Ty::Open),
        f("tasks", Ty::Open),
        f("extensions", Ty::Open),
    ],
};
pub static SERVER_CAPABILITIES: Shape = Shape {
    name: "ServerCapabilities",
    fields: &[
        f("experimental", Ty::Open),
        f("logging", Ty::Open),
        f("completions", Ty::Open),
        f("prompts", Ty::Open),
        f("resources", Ty::Open),
        f("tools", Ty::Open),
        f("tasks", Ty::Open),
        f("extensions", Ty::Open),
    ],
};
pub static PROMPT_REFERENCE: Shape = Shape {
    name: "PromptReference",
    fields: &[f("type", Ty::Str).req(), f("name", Ty::Str).req(), f("title", Ty::Str)],
};
pub static RESOURCE_REFERENCE: Shape = Shape {
    name: "ResourceTemplateReference",
    fields: &[f("type", Ty::Str).req(), f("uri", Ty::Str).req()],
};
static REFERENCE_VARIANTS: [Variant; 2] = [
    Variant { tag: "ref/prompt", shape: &PROMPT_REFERENCE, since: R2024 },
    Variant { tag: "ref/resource", shape: &RESOURCE_REFERENCE, since: R2024 },
];
pub static COMPLETION: Shape = Shape {
    name: "Completion",
    fields: &[f("values", Ty::Arr(&Ty::Str)).req(), f("total", Ty::Int), f("hasMore", Ty::Bool)],
};
pub static SAMPLING_MESSAGE: Shape = Shape {
    name: "SamplingMessage",
    fields: &[f("role", ROLE).req(), f("content", Ty::Any).req(), META],
};

// --- params ---------------------------------------------------------------------------------

const REQ_META: Field = f("_meta", Ty::RequestMeta).req_since(R2026);
/// Stateless-era fields of requests that can return an input-required result.
const INPUT_RESPONSES: Field = f("inputResponses", Ty::Open).since(R2026);
const REQUEST_STATE: Field = f("requestState", Ty::Str).since(R2026);

pub static P_EMPTY: Shape = Shape { name: "RequestParams", fields: &[REQ_META] };
pub static P_NOTIFICATION: Shape = Shape { name: "NotificationParams", fields: &[META] };
pub static P_INITIALIZE: Shape = Shape {
    name: "InitializeRequestParams",
    fields: &[
        f("protocolVersion", Ty::Str).req(),
        f("capabilities", Ty::Obj(&CLIENT_CAPABILITIES)).req(),
        f("clientInfo", Ty::Obj(&IMPLEMENTATION)).req(),
        META,
    ],
};
pub static P_PAGINATED: Shape =
    Shape { name: "PaginatedRequestParams", fields: &[f("cursor", Ty::Str), REQ_META] };
pub static P_CALL_TOOL: Shape = Shape {
    name: "CallToolRequestParams",
    fields: &[
        f("name", Ty::Str).req(),
        f("arguments", Ty::Open),
        f("task", Ty::Open).since(R2025_11).until(R2025_11),
        INPUT_RESPONSES,
        REQUEST_STATE,
        REQ_META,
    ],
};
pub static P_READ_RESOURCE: Shape = Shape {
    name: "ReadResourceRequestParams",
    fields: &[f("uri", Ty::Str).req(), INPUT_RESPONSES, REQUEST_STATE, REQ_META],
};
pub static P_RESOURCE: Shape =
    Shape { name: "ResourceRequestParams", fields: &[f("uri", Ty::Str).req(), REQ_META] };
pub static P_GET_PROMPT: Shape = Shape {
    name: "GetPromptRequestParams",
    fields: &[
        f("name", Ty::Str).req(),
        f("arguments", Ty::StrMap),
        INPUT_RESPONSES,
        REQUEST_STATE,
        REQ_META,
    ],
};
pub static COMPLETE_ARGUMENT: Shape = Shape {
    name: "CompleteArgument",
    fields: &[f("name", Ty::Str).req(), f("value", Ty::Str).req()],
};
pub static P_COMPLETE: Shape = Shape {
    name: "CompleteRequestParams",
    fields: &[
        f("ref", Ty::Tagged(&REFERENCE_VARIANTS)).req(),
        f("argument", Ty::Obj(&COMPLETE_ARGUMENT)).req(),
        f("context", Ty::Open).since(R2025_06),
        REQ_META,
    ],
};
pub static P_SET_LEVEL: Shape = Shape {
    name: "SetLevelRequestParams",
    fields: &[f("level", Ty::Enum(LOGGING_LEVELS)).req(), META],
};
pub static SUBSCRIPTION_FILTER: Shape = Shape {
    name: "SubscriptionFilter",
    fields: &[
        f("toolsListChanged", Ty::Bool),
        f("promptsListChanged", Ty::Bool),
        f("resourcesListChanged", Ty::Bool),
        f("resourceSubscriptions", Ty::Arr(&Ty::Str)),
    ],
};
pub static P_LISTEN: Shape = Shape {
    name: "SubscriptionsListenRequestParams",
    fields: &[f("notifications", Ty::Obj(&SUBSCRIPTION_FILTER)).req(), REQ_META],
};
pub static P_ACKNOWLEDGED: Shape = Shape {
    name: "SubscriptionsAcknowledgedNotificationParams",
    fields: &[f("notifications", Ty::Obj(&SUBSCRIPTION_FILTER)).req(), META],
};
pub static P_ELICITATION_COMPLETE: Shape = Shape {
    name: "ElicitationCompleteNotificationParams",
    fields: &[f("elicitationId", Ty::Str).req()],
};
pub static P_CANCELLED: Shape = Shape {
    name: "CancelledNotificationParams",
    fields: &[
        // Required in every revision but 2025-11-25, where tasks are cancelled otherwise.
        f("requestId", Ty::IdLike).req().until(R2025_06),
        f("requestId", Ty::IdLike).since(R2025_11).until(R2025_11),
        f("requestId", Ty::IdLike).req().since(R2026),
        f("reason", Ty::Str),
        META,
    ],
};
pub static P_PROGRESS: Shape = Shape {
    name: "ProgressNotificationParams",
    fields: &[
        f("progressToken", Ty::IdLike).req(),
        f("progress", Ty::Num).req(),
        f("total", Ty::Num),
        f("message", Ty::Str).since(R2025_03),
        META,
    ],
};
pub static P_LOG: Shape = Shape {
    name: "LoggingMessageNotificationParams",
    fields: &[
        f("level", Ty::Enum(LOGGING_LEVELS)).req(),
        f("logger", Ty::Str),
        f("data", Ty::Any).req(),
        META,
    ],
};
pub static P_RESOURCE_UPDATED: Shape =
    Shape { name: "ResourceUpdatedNotificationParams", fields: &[f("uri", Ty::Str).req(), META] };
pub static P_CREATE_MESSAGE: Shape = Shape {
    name: "CreateMessageRequestParams",
    fields: &[
        f("messages", Ty::Arr(&Ty::Obj(&SAMPLING_MESSAGE))).req(),
        f("maxTokens", Ty::Int).req(),
        f("modelPreferences", Ty::Open),
        f("systemPrompt", Ty::Str),
        f("includeContext", Ty::Enum(&["none", "thisServer", "allServers"])),
        f("temperature", Ty::Num),
        f("stopSequences", Ty::Arr(&Ty::Str)),
        f("metadata", Ty::Open),
        f("tools", Ty::Arr(&Ty::Obj(&TOOL))).since(R2025_11),
        f("toolChoice", Ty::Open).since(R2025_11),
        f("task", Ty::Open).since(R2025_11).until(R2025_11),
        META,
    ],
};
pub static P_ELICIT: Shape = Shape {
    name: "ElicitRequestParams",
    fields: &[
        f("message", Ty::Str).req(),
        f("mode", Ty::Enum(&["form", "url"])).since(R2025_11),
        // Required until URL-mode elicitation (2025-11-25), where only form mode has it.
        f("requestedSchema", Ty::Open).req().until(R2025_06),
        f("requestedSchema", Ty::Open).since(R2025_11),
        f("elicitationId", Ty::Str).since(R2025_11),
        f("url", Ty::Str).since(R2025_11),
        f("task", Ty::Open).since(R2025_11).until(R2025_11),
        META,
    ],
};

// --- results --------------------------------------------------------------------------------

const RESULT_TYPE: Field =
    f("resultType", Ty::Enum(&["complete", "input_required"])).since(R2026).req_since(R2026);
const TTL: Field = f("ttlMs", Ty::Int).since(R2026).req_since(R2026);
const CACHE_SCOPE: Field =
    f("cacheScope", Ty::Enum(&["private", "public"])).since(R2026).req_since(R2026);
const NEXT_CURSOR: Field = f("nextCursor", Ty::Str);

pub static R_EMPTY: Shape = Shape { name: "EmptyResult", fields: &[META, RESULT_TYPE] };
pub static R_INITIALIZE: Shape = Shape {
    name: "InitializeResult",
    fields: &[
        f("protocolVersion", Ty::Str).req(),
        f("capabilities", Ty::Obj(&SERVER_CAPABILITIES)).req(),
        f("serverInfo", Ty::Obj(&IMPLEMENTATION)).req(),
        f("instructions", Ty::Str),
        META,
    ],
};
pub static R_DISCOVER: Shape = Shape {
    name: "DiscoverResult",
    fields: &[
        f("supportedVersions", Ty::Arr(&Ty::Str)).req(),
        f("capabilities", Ty::Obj(&SERVER_CAPABILITIES)).req(),
        f("instructions", Ty::Str),
        TTL,
        CACHE_SCOPE,
        RESULT_TYPE,
        META,
    ],
};
pub static R_LIST_TOOLS: Shape = Shape {
    name: "ListToolsResult",
    fields: &[
        f("tools", Ty::Arr(&Ty::Obj(&TOOL))).req(),
        NEXT_CURSOR,
        TTL,
        CACHE_SCOPE,
        RESULT_TYPE,
        META,
    ],
};
pub static R_CALL_TOOL: Shape = Shape {
    name: "CallToolResult",
    fields: &[
        f("content", Ty::Arr(&CONTENT)).req(),
        // An object until 2025-11-25; 2026-07-28 allows any JSON value.
        f("structuredContent", Ty::Open).since(R2025_06).until(R2025_11),
        f("structuredContent", Ty::Any).since(R2026),
        f("isError", Ty::Bool),
        RESULT_TYPE,
        META,
    ],
};
pub static R_LIST_RESOURCES: Shape = Shape {
    name: "ListResourcesResult",
    fields: &[
        f("resources", Ty::Arr(&Ty::Obj(&RESOURCE))).req(),
        NEXT_CURSOR,
        TTL,
        CACHE_SCOPE,
        RESULT_TYPE,
        META,
    ],
};
pub static R_LIST_TEMPLATES: Shape = Shape {
    name: "ListResourceTemplatesResult",
    fields: &[
        f("resourceTemplates", Ty::Arr(&Ty::Obj(&RESOURCE_TEMPLATE))).req(),
        NEXT_CURSOR,
        TTL,
        CACHE_SCOPE,
        RESULT_TYPE,
        META,
    ],
};
pub static R_READ_RESOURCE: Shape = Shape {
    name: "ReadResourceResult",
    fields: &[
        f("contents", Ty::Arr(&RESOURCE_CONTENTS)).req(),
        TTL,
        CACHE_SCOPE,
        RESULT_TYPE,
        META,
    ],
};
pub static R_LIST_PROMPTS: Shape = Shape {
    name: "ListPromptsResult",
    fields: &[
        f("prompts", Ty::Arr(&Ty::Obj(&PROMPT))).req(),
        NEXT_CURSOR,
        TTL,
        CACHE_SCOPE,
        RESULT_TYPE,
        META,
    ],
};
pub static R_GET_PROMPT: Shape = Shape {
    name: "GetPromptResult",
    fields: &[
        f("messages", Ty::Arr(&Ty::Obj(&PROMPT_MESSAGE))).req(),
        f("description", Ty::Str),
        RESULT_TYPE,
        META,
    ],
};
pub static R_COMPLETE: Shape = Shape {
    name: "CompleteResult",
    fields: &[f("completion", Ty::Obj(&COMPLETION)).req(), RESULT_TYPE, META],
};
pub static R_LISTEN: Shape =
    Shape { name: "SubscriptionsListenResult", fields: &[RESULT_TYPE, META] };
pub static R_INPUT_REQUIRED: Shape = Shape {
    name: "InputRequiredResult",
    fields: &[
        f("resultType", Ty::Enum(&["input_required"])).req(),
        f("inputRequests", Ty::Open),
        f("requestState", Ty::Str),
        META,
    ],
};
pub static R_CREATE_MESSAGE: Shape = Shape {
    name: "CreateMessageResult",
    fields: &[
        f("role", ROLE).req(),
        f("content", Ty::Any).req(),
        f("model", Ty::Str).req(),
        f("stopReason", Ty::Str),
        META,
    ],
};
pub static R_ELICIT: Shape = Shape {
    name: "ElicitResult",
    fields: &[
        f("action", Ty::Enum(&["accept", "decline", "cancel"])).req(),
        f("content", Ty::Open),
        META,
    ],
};
pub static R_LIST_ROOTS: Shape =
    Shape { name: "ListRootsResult", fields: &[f("roots", Ty::Arr(&Ty::Obj(&ROOT))).req(), META] };

// --- methods --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

#[derive(Debug)]
pub struct Method {
    pub name: &'static str,
    pub direction: Direction,
    pub params: &'static Shape,
    /// `params` must be present (stateless-era requests always carry `_meta`).
    pub params_required: Req,
    /// `None` for notifications.
    pub result: Option<&'static Shape>,
    pub since: Rev,
    pub until: Rev,
    /// Whether a stateless-era result may be `input_required` instead.
    pub input_required: bool,
}

const fn request(name: &'static str, params: &'static Shape, result: &'static Shape) -> Method {
    Method {
        name,
        direction: Direction::ClientToServer,
        params,
        params_required: Req::Since(R2026),
        result: Some(result),
        since: R2024,
        until: R2026,
        input_required: false,
    }
}

const fn notification(name: &'static str, direction: Direction, params: &'static Shape) -> Method {
    Method {
        name,
        direction,
        params,
        params_required: Req::No,
        result: None,
        since: R2024,
        until: R2026,
        input_required: false,
    }
}

const fn legacy(mut m: Method) -> Method {
    m.until = R2025_11;
    m
}

const fn stateless(mut m: Method) -> Method {
    m.since = R2026;
    m
}

const fn since(mut m: Method, r: Rev) -> Method {
    m.since = r;
    m
}

const fn required_params(mut m: Method) -> Method {
    m.params_required = Req::Yes;
    m
}

const fn may_need_input(mut m: Method) -> Method {
    m.input_required = true;
    m
}

const fn from_server(mut m: Method) -> Method {
    m.direction = Direction::ServerToClient;
    m.params_required = Req::Yes;
    m
}

use Direction::{ClientToServer as C2S, ServerToClient as S2C};

pub static METHODS: &[Method] = &[
    required_params(legacy(request("initialize", &P_INITIALIZE, &R_INITIALIZE))),
    legacy(request("ping", &P_EMPTY, &R_EMPTY)),
    required_params(stateless(request("server/discover", &P_EMPTY, &R_DISCOVER))),
    request("tools/list", &P_PAGINATED, &R_LIST_TOOLS),
    may_need_input(required_params(request("tools/call", &P_CALL_TOOL, &R_CALL_TOOL))),
    request("resources/list", &P_PAGINATED, &R_LIST_RESOURCES),
    request("resources/templates/list", &P_PAGINATED, &R_LIST_TEMPLATES),
    may_need_input(required_params(request("resources/read", &P_READ_RESOURCE, &R_READ_RESOURCE))),
    required_params(legacy(request("resources/subscribe", &P_RESOURCE, &R_EMPTY))),
    required_params(legacy(request("resources/unsubscribe", &P_RESOURCE, &R_EMPTY))),
    request("prompts/list", &P_PAGINATED, &R_LIST_PROMPTS),
    may_need_input(required_params(request("prompts/get", &P_GET_PROMPT, &R_GET_PROMPT))),
    required_params(request("completion/complete", &P_COMPLETE, &R_COMPLETE)),
    required_params(legacy(request("logging/setLevel", &P_SET_LEVEL, &R_EMPTY))),
    required_params(stateless(request("subscriptions/listen", &P_LISTEN, &R_LISTEN))),
    legacy(notification("notifications/initialized", C2S, &P_NOTIFICATION)),
    notification("notifications/cancelled", C2S, &P_CANCELLED),
    notification("notifications/cancelled", S2C, &P_CANCELLED),
    legacy(notification("notifications/progress", C2S, &P_PROGRESS)),
    notification("notifications/progress", S2C, &P_PROGRESS),
    legacy(notification("notifications/roots/list_changed", C2S, &P_NOTIFICATION)),
    notification("notifications/message", S2C, &P_LOG),
    notification("notifications/resources/updated", S2C, &P_RESOURCE_UPDATED),
    notification("notifications/resources/list_changed", S2C, &P_NOTIFICATION),
    notification("notifications/tools/list_changed", S2C, &P_NOTIFICATION),
    notification("notifications/prompts/list_changed", S2C, &P_NOTIFICATION),
    stateless(notification("notifications/subscriptions/acknowledged", S2C, &P_ACKNOWLEDGED)),
    legacy(since(
        notification("notifications/elicitation/complete", S2C, &P_ELICITATION_COMPLETE),
        R2025_11,
    )),
    legacy(from_server(request("sampling/createMessage", &P_CREATE_MESSAGE, &R_CREATE_MESSAGE))),
    legacy(since(from_server(request("elicitation/create", &P_ELICIT, &R_ELICIT)), R2025_06)),
    legacy(from_server(request("roots/list", &P_EMPTY, &R_LIST_ROOTS))),
    legacy(from_server(request("ping", &P_EMPTY, &R_EMPTY))),
];

/// The definition of a method at a revision, if it exists there.
pub fn method(name: &str, direction: Direction, rev: Rev) -> Option<&'static Method> {
    METHODS
        .iter()
        .find(|m| m.name == name && m.direction == direction && m.since <= rev && rev <= m.until)
}

// --- validation -----------------------------------------------------------------------------

/// What a validation found: the first problems, with JSON paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub problems: Vec<String>,
    /// Problems that are only unknown fields (dropped rather than refused in lenient mode).
    pub unknown_fields_only: bool,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

struct Checker {
    rev: Rev,
    problems: Vec<String>,
    unknown: usize,
}

const MAX_PROBLEMS: usize = 8;

impl Checker {
    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }

    fn ty(&mut self, v: &Value, ty: &Ty, path: &str) {
        match ty {
            Ty::Any => {}
            Ty::Str if v.is_string() => {}
            Ty::Int if v.is_i64() || v.is_u64() => {}
            Ty::Num if v.is_number() => {}
            Ty::Bool if v.is_boolean() => {}
            Ty::Open if v.is_object() => {}
            Ty::IdLike if v.is_string() || v.is_i64() || v.is_u64() => {}
            Ty::StrMap => match v.as_object() {
                Some(m) => {
                    for (k, x) in m {
                        if !x.is_string() {
                            self.problem(format!("{path}.{k}: expected a string"));
                        }
                    }
                }
                None => self.problem(format!("{path}: expected an object of strings")),
            },
            Ty::Enum(values) => match v.as_str() {
                Some(s) if values.contains(&s) => {}
                _ => self.problem(format!("{path}: expected one of {}", values.join(", "))),
            },
            Ty::Obj(shape) => self.shape(v, shape, path, false),
            Ty::Arr(item) => match v.as_array() {
                Some(items) => {
                    for (i, x) in items.iter().enumerate() {
                        self.ty(x, item, &format!("{path}[{i}]"));
                    }
                }
                None => self.problem(format!("{path}: expected an array")),
            },
            Ty::Tagged(variants) => {
                let tag = v.get("type").and_then(Value::as_str);
                match variants.iter().find(|x| Some(x.tag) == tag && x.since <= self.rev) {
                    Some(var) => self.shape(v, var.shape, path, false),
                    None => self.problem(format!("{path}.type: unknown or missing type {tag:?}")),
                }
            }
            Ty::Either(options) => {
                let rev = self.rev;
                let ok = options.iter().any(|o| {
                    let mut c = Checker { rev, problems: vec![], unknown: 0 };
                    c.ty(v, o, path);
                    c.problems.is_empty()
                });
                if !ok {
                    self.problem(format!("{path}: matches none of the allowed forms"));
                }
            }
            Ty::RequestMeta => {
                let Some(m) = v.as_object() else {
                    return self.problem(format!("{path}: expected an object"));
                };
                if self.rev.stateless() {
                    match m.get("io.modelcontextprotocol/protocolVersion") {
                        Some(Value::String(_)) => {}
                        Some(_) => self.problem(format!(
                            "{path}.io.modelcontextprotocol/protocolVersion: expected a string"
                        )),
                        None => self.problem(format!(
                            "{path}: missing io.modelcontextprotocol/protocolVersion"
                        )),
                    }
                    match m.get("io.modelcontextprotocol/clientCapabilities") {
                        Some(c) => self.shape(
                            c,
                            &CLIENT_CAPABILITIES,
                            &format!("{path}.io.modelcontextprotocol/clientCapabilities"),
                            false,
                        ),
                        None => self.problem(format!(
                            "{path}: missing io.modelcontextprotocol/clientCapabilities"
                        )),
                    }
                    if let Some(ci) = m.get("io.modelcontextprotocol/clientInfo") {
                        self.shape(
                            ci,
                            &IMPLEMENTATION,
                            &format!("{path}.io.modelcontextprotocol/clientInfo"),
                            false,
                        );
                    }
                    if let Some(l) = m.get("io.modelcontextprotocol/logLevel") {
                        self.ty(
                            l,
                            &Ty::Enum(LOGGING_LEVELS),
                            &format!("{path}.io.modelcontextprotocol/logLevel"),
                        );
                    }
                }
                if let Some(t) = m.get("progressToken") {
                    self.ty(t, &Ty::IdLike, &format!("{path}.progressToken"));
                }
            }
            _ => self.problem(format!("{path}: expected {}", describe(ty))),
        }
    }

    fn shape(&mut self, v: &Value, shape: &Shape, path: &str, closed: bool) {
        let Some(obj) = v.as_object() else {
            return self.problem(format!("{path}: expected an object ({})", shape.name));
        };
        let rev = self.rev;
        for field in shape.fields.iter().filter(|f| f.present_in(rev)) {
            match obj.get(field.name) {
                Some(x) => self.ty(x, &field.ty, &format!("{path}.{}", field.name)),
                None if field.required_in(self.rev) => {
                    self.problem(format!("{path}.{}: required", field.name))
                }
                None => {}
            }
        }
        if closed {
            for key in obj.keys() {
                if !shape.fields.iter().any(|f| f.name == key && f.present_in(self.rev)) {
                    self.unknown += 1;
                    self.problem(format!(
                        "{path}.{key}: unknown field (not in {} at {})",
                        shape.name,
                        self.rev.as_str()
                    ));
                }
            }
        }
    }
}

fn describe(ty: &Ty) -> &'static str {
    match ty {
        Ty::Str => "a string",
        Ty::Int => "an integer",
        Ty::Num => "a number",
        Ty::Bool => "a boolean",
        Ty::Open | Ty::StrMap | Ty::Obj(_) | Ty::RequestMeta => "an object",
        Ty::IdLike => "a string or an integer",
        Ty::Arr(_) => "an array",
        _ => "a valid value",
    }
}

fn finish(c: Checker) -> Result<(), Invalid> {
    if c.problems.is_empty() {
        Ok(())
    } else {
        let unknown_fields_only = c.unknown == c.problems.len();
        Err(Invalid { problems: c.problems, unknown_fields_only })
    }
}

/// Checks the params of a request or notification. `strict`: unknown top-level members refused.
pub fn check_params(
    m: &Method,
    params: Option<&Value>,
    rev: Rev,
    strict: bool,
) -> Result<(), Invalid> {
    let mut c = Checker { rev, problems: vec![], unknown: 0 };
    match params {
        Some(p) => c.shape(p, m.params, "params", strict),
        None => {
            let required = match m.params_required {
                Req::No => false,
                Req::Yes => true,
                Req::Since(r) => rev >= r,
            };
            if required {
                c.problem("params: required".into());
            }
        }
    }
    finish(c)
}

/// Checks a result against the method's result definition (or the input-required result,
/// where the revision allows one).
pub fn check_result(m: &Method, result: &Value, rev: Rev, strict: bool) -> Result<(), Invalid> {
    let mut c = Checker { rev, problems: vec![], unknown: 0 };
    let input_required = rev.stateless()
        && result.get("resultType").and_then(Value::as_str) == Some("input_required");
    match (m.result, input_required) {
        (_, true) if m.input_required => c.shape(result, &R_INPUT_REQUIRED, "result", strict),
        (_, true) => c.problem(format!("result: {} cannot return input_required", m.name)),
        (Some(shape), false) => c.shape(result, shape, "result", strict),
        (None, false) => c.problem("result: a notification has no result".into()),
    }
    finish(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools_call(rev: Rev) -> &'static Method {
        method("tools/call", Direction::ClientToServer, rev).unwrap()
    }

    #[test]
    fn methods_exist_in_their_revisions_only() {
        assert!(method("initialize", C2S, R2025_11).is_some());
        assert!(method("initialize", C2S, R2026).is_none());
        assert!(method("server/discover", C2S, R2026).is_some());
        assert!(method("server/discover", C2S, R2025_11).is_none());
        assert!(method("elicitation/create", S2C, R2025_03).is_none());
        assert!(method("elicitation/create", S2C, R2025_06).is_some());
    }

    #[test]
    fn strict_mode_closes_params_but_not_extension_points() {
        let m = tools_call(R2025_11);
        let ok = json!({"name": "x", "arguments": {"anything": {"nested": true}}, "_meta": {"vendor/x": 1}});
        assert!(check_params(m, Some(&ok), R2025_11, true).is_ok());
        let extra = json!({"name": "x", "bypass": true});
        let e = check_params(m, Some(&extra), R2025_11, true).unwrap_err();
        assert!(e.unknown_fields_only && e.problems[0].contains("params.bypass"), "{e}");
        assert!(
            check_params(m, Some(&extra), R2025_11, false).is_ok(),
            "lenient mode keeps unknown fields"
        );
        let wrong = json!({"name": 5});
        let e = check_params(m, Some(&wrong), R2025_11, false).unwrap_err();
        assert!(!e.unknown_fields_only && e.problems[0].contains("params.name"), "{e}");
    }

    #[test]
    fn stateless_requests_need_the_envelope() {
        let m = tools_call(R2026);
        let no_meta = json!({"name": "x"});
        assert!(check_params(m, Some(&no_meta), R2026, true).is_err());
        let meta = json!({"name": "x", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}});
        assert!(check_params(m, Some(&meta), R2026, true).is_ok());
        let bad_caps = json!({"name": "x", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": []}});
        assert!(check_params(m, Some(&bad_caps), R2026, true).is_err());
    }

    #[test]
    fn results_are_checked_per_revision() {
        let m = tools_call(R2025_06);
        let r = json!({"content": [{"type": "text", "text": "hi"}], "structuredContent": {"a": 1}});
        assert!(check_result(m, &r, R2025_06, true).is_ok());
        assert!(
            check_result(m, &r, R2024, true).is_err(),
            "structuredContent arrived in 2025-06-18"
        );
        let bad_block = json!({"content": [{"type": "video", "url": "x"}]});
        assert!(check_result(m, &bad_block, R2025_06, true).is_err());
        let m26 = tools_call(R2026);
        let missing_type = json!({"content": []});
        assert!(
            check_result(m26, &missing_type, R2026, true).is_err(),
            "resultType is required in 2026-07-28"
        );
        let input =
            json!({"resultType": "input_required", "inputRequests": {}, "requestState": "s"});
        assert!(check_result(m26, &input, R2026, true).is_ok());
        let list = method("tools/list", C2S, R2026).unwrap();
        assert!(check_result(list, &input, R2026, true).is_err(), "tools/list never needs input");
    }
}
