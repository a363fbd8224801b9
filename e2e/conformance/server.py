"""The fixture server for the MCP conformance suite's server scenarios, built on the official
Python SDK (both protocol eras). The suite's own everything-server is not published to npm, so
this one implements what each scenario's description asks for; it is the upstream that the
conformance run measures directly and through the gateway.

usage: server.py PORT
"""
import asyncio
import base64
import json
import sys
from typing import Annotated

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Resolve, Sample
from mcp_types import (
    AudioContent,
    CallToolResult,
    CreateMessageResult,
    EmbeddedResource,
    GetPromptResult,
    ImageContent,
    InputRequiredResult,
    PromptMessage,
    SamplingMessage,
    TextContent,
    TextResourceContents,
)

# A 1x1 red PNG and a minimal WAV header with no samples.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
        "0000000c4944415408d763f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
    )
).decode()
WAV = base64.b64encode(
    b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    + b"data" + (0).to_bytes(4, "little")
).decode()

mcp = MCPServer("palisade-conformance-fixture", instructions="Conformance fixture for Palisade tests.")


def text(t: str) -> TextContent:
    return TextContent(type="text", text=t)


# --- tools: content ----------------------------------------------------------------------------

@mcp.tool(description="Returns simple text")
def test_simple_text() -> CallToolResult:
    return CallToolResult(content=[text("This is a simple text response for testing.")])


@mcp.tool(description="Returns an image")
def test_image_content() -> CallToolResult:
    return CallToolResult(content=[ImageContent(type="image", data=PNG, mime_type="image/png")])


@mcp.tool(description="Returns audio")
def test_audio_content() -> CallToolResult:
    return CallToolResult(content=[AudioContent(type="audio", data=WAV, mime_type="audio/wav")])


@mcp.tool(description="Returns an embedded resource")
def test_embedded_resource() -> CallToolResult:
    return CallToolResult(content=[EmbeddedResource(type="resource", resource=TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."))])


@mcp.tool(description="Returns text, an image and a resource")
def test_multiple_content_types() -> CallToolResult:
    return CallToolResult(content=[
        text("Multiple content types test:"),
        ImageContent(type="image", data=PNG, mime_type="image/png"),
        EmbeddedResource(type="resource", resource=TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}))),
    ])


@mcp.tool(description="Always fails")
def test_error_handling() -> str:
    raise ToolError("This tool intentionally returns an error for testing")


# --- tools: notifications during a call --------------------------------------------------------

@mcp.tool(description="Reports progress 0, 50, 100")
async def test_tool_with_progress(ctx: Context) -> str:
    for step in (0, 50, 100):
        await ctx.report_progress(step, 100)
        await asyncio.sleep(0.05)
    return "Progress test completed"


@mcp.tool(description="Sends three log messages")
async def test_tool_with_logging(ctx: Context) -> str:
    for i, message in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
        if i:
            await asyncio.sleep(0.05)
        await ctx.info(message)
    return "Logging test completed"


# --- tools: requests to the client (session era: standalone requests) --------------------------

@mcp.tool(description="Asks the client's LLM")
async def test_sampling(prompt: str, ctx: Context) -> str:
    result = await ctx.session.create_message(
        messages=[SamplingMessage(role="user", content=text(prompt))], max_tokens=100,
        related_request_id=ctx.request_id)
    content = result.content
    answer = getattr(content, "text", None) or json.dumps(content.model_dump() if hasattr(content, "model_dump") else str(content))
    return f"LLM response: {answer}"


async def elicit(ctx: Context, message: str, schema: dict) -> str:
    result = await ctx.session.elicit(message, schema, related_request_id=ctx.request_id)
    return f"action={result.action}, content={json.dumps(result.content)}"


@mcp.tool(description="Asks the user")
async def test_elicitation(message: str, ctx: Context) -> str:
    answer = await elicit(ctx, message, {"type": "object", "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"}},
        "required": ["username", "email"]})
    return f"User response: {answer}"


@mcp.tool(description="Elicitation with defaults for every primitive type")
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    answer = await elicit(ctx, "Please review and update the form fields with defaults", {
        "type": "object", "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "score": {"type": "number", "default": 95.5},
            "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
            "verified": {"type": "boolean", "default": True}}})
    return f"Elicitation completed: {answer}"


@mcp.tool(description="Elicitation with every enum form")
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    answer = await elicit(ctx, "Please select options from the enum fields", {
        "type": "object", "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {"type": "string", "oneOf": [
                {"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"}]},
            "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                           "enumNames": ["Option One", "Option Two", "Option Three"]},
            "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
            "titledMulti": {"type": "array", "items": {"anyOf": [
                {"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"},
                {"const": "value3", "title": "Third Choice"}]}}}})
    return f"Elicitation completed: {answer}"


# --- tools: the stateless revision (input required results) ------------------------------------

def ask_name(message: str = "What is your name?") -> dict:
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": {
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}


def accepted(responses, key: str):
    """The content of an accepted elicitation response under `key`, or None."""
    r = (responses or {}).get(key)
    if hasattr(r, "model_dump"):
        r = r.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(r, dict) or r.get("action") != "accept" or not isinstance(r.get("content"), dict):
        return None
    return r["content"]


def raw_responses(ctx: Context) -> dict:
    r = ctx.input_responses
    if r is None:
        return {}
    return {k: v.model_dump(by_alias=True, exclude_none=True) if hasattr(v, "model_dump") else v
            for k, v in dict(r).items()}


def invalid(message: str) -> ToolError:
    return ToolError(message)


@mcp.tool(description="Asks for a name through an input required result")
async def test_input_required_result_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
    responses = raw_responses(ctx)
    if "user_name" in responses and not isinstance(responses["user_name"], dict):
        raise invalid("inputResponses.user_name must be an elicitation result")
    content = accepted(responses, "user_name")
    if content is None:
        return InputRequiredResult(input_requests={"user_name": ask_name()})
    return CallToolResult(content=[text(f"Hello, {content.get('name')}!")])


@mcp.tool(description="Asks the client's LLM through an input required result")
async def test_input_required_result_sampling(ctx: Context) -> CallToolResult | InputRequiredResult:
    answer = raw_responses(ctx).get("capital_question")
    if not isinstance(answer, dict):
        return InputRequiredResult(input_requests={"capital_question": {"method": "sampling/createMessage", "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": "What is the capital of France?"}}],
            "maxTokens": 100}}})
    return CallToolResult(content=[text(f"LLM said: {answer.get('content', {}).get('text', '')}")])


@mcp.tool(description="Asks for the client's roots through an input required result")
async def test_input_required_result_list_roots(ctx: Context) -> CallToolResult | InputRequiredResult:
    answer = raw_responses(ctx).get("client_roots")
    if not isinstance(answer, dict):
        return InputRequiredResult(input_requests={"client_roots": {"method": "roots/list", "params": {}}})
    uris = [r.get("uri") for r in answer.get("roots", [])]
    return CallToolResult(content=[text(f"Roots: {', '.join(map(str, uris))}")])


@mcp.tool(description="Round-trips requestState")
async def test_input_required_result_request_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    if ctx.request_state == "round-1" and accepted(raw_responses(ctx), "confirm") is not None:
        return CallToolResult(content=[text("state-ok: confirmed")])
    return InputRequiredResult(request_state="round-1", input_requests={"confirm": {
        "method": "elicitation/create", "params": {"message": "Please confirm", "requestedSchema": {
            "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}})


@mcp.tool(description="Rejects a tampered requestState")
async def test_input_required_result_tampered_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    if ctx.request_state is None:
        return InputRequiredResult(request_state="round-1", input_requests={"confirm": {
            "method": "elicitation/create", "params": {"message": "Please confirm", "requestedSchema": {
                "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}})
    # The SDK seals requestState; a tampered one never reaches this handler.
    return CallToolResult(content=[text("state verified")])


@mcp.tool(description="Three rounds")
async def test_input_required_result_multi_round(ctx: Context) -> CallToolResult | InputRequiredResult:
    responses = raw_responses(ctx)
    if ctx.request_state == "round-2" and accepted(responses, "step2") is not None:
        return CallToolResult(content=[text("multi-round complete")])
    if ctx.request_state == "round-1" and accepted(responses, "step1") is not None:
        return InputRequiredResult(request_state="round-2", input_requests={"step2": {
            "method": "elicitation/create", "params": {"message": "Step 2: What is your favorite color?",
                "requestedSchema": {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}}}})
    return InputRequiredResult(request_state="round-1", input_requests={"step1": ask_name("Step 1: What is your name?")})


@mcp.tool(description="Several input requests at once")
async def test_input_required_result_multiple_inputs(ctx: Context) -> CallToolResult | InputRequiredResult:
    responses = raw_responses(ctx)
    if ctx.request_state == "round-1" and all(k in responses for k in ("user_name", "greeting", "client_roots")):
        return CallToolResult(content=[text("all inputs received")])
    return InputRequiredResult(request_state="round-1", input_requests={
        "user_name": ask_name(),
        "greeting": {"method": "sampling/createMessage", "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": "Generate a greeting"}}], "maxTokens": 50}},
        "client_roots": {"method": "roots/list", "params": {}}})


@mcp.tool(description="Asks only for what the client can answer")
async def test_input_required_result_capabilities(ctx: Context) -> CallToolResult | InputRequiredResult:
    caps = ctx.client_capabilities
    requests = {}
    if caps is not None and caps.sampling is not None:
        requests["greeting"] = {"method": "sampling/createMessage", "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": "Say hi"}}], "maxTokens": 20}}
    if caps is not None and caps.elicitation is not None:
        requests["user_name"] = ask_name()
    if not requests or raw_responses(ctx):
        return CallToolResult(content=[text("capabilities respected")])
    return InputRequiredResult(input_requests=requests)


def _sample_for_missing_capability() -> Sample:
    return Sample([SamplingMessage(role="user", content=text("hi"))], max_tokens=10)


@mcp.tool(description="Needs the client's sampling capability")
async def test_missing_capability(answer: Annotated[CreateMessageResult, Resolve(_sample_for_missing_capability)]) -> str:
    return f"sampled: {getattr(answer.content, 'text', '')}"


# --- resources ---------------------------------------------------------------------------------

@mcp.resource("test://static-text", name="static-text", description="A static text resource", mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary", name="static-binary", description="A static binary resource", mime_type="image/png")
def static_binary() -> bytes:
    return base64.b64decode(PNG)


@mcp.resource("test://watched-resource", name="watched-resource", description="A resource to subscribe to", mime_type="text/plain")
def watched() -> str:
    return "watched"


@mcp.resource("test://template/{id}/data", name="template", description="A templated resource", mime_type="application/json")
def template(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


# --- prompts -----------------------------------------------------------------------------------

@mcp.prompt(description="A simple prompt")
def test_simple_prompt() -> str:
    return "This is a simple prompt for testing."


@mcp.prompt(description="A prompt with arguments")
def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@mcp.prompt(description="A prompt with an embedded resource")
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
    return [
        UserMessage(content=EmbeddedResource(type="resource", resource=TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."))),
        UserMessage(content=text("Please process the embedded resource above.")),
    ]


@mcp.prompt(description="A prompt with an image")
def test_prompt_with_image() -> list[UserMessage]:
    return [
        UserMessage(content=ImageContent(type="image", data=PNG, mime_type="image/png")),
        UserMessage(content=text("Please analyze the image above.")),
    ]


@mcp.prompt(description="A prompt that needs input first")
async def test_input_required_result_prompt(ctx: Context) -> GetPromptResult | InputRequiredResult:
    content = accepted(raw_responses(ctx), "user_context")
    if content is None:
        return InputRequiredResult(input_requests={"user_context": {"method": "elicitation/create", "params": {
            "message": "What context should the prompt use?", "requestedSchema": {
                "type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}}}})
    return GetPromptResult(messages=[PromptMessage(role="user", content=text(f"Context: {content.get('context')}"))])


@mcp.completion()
async def complete(ref, argument, context):
    from mcp_types import Completion
    values = [v for v in ("paris", "park", "party") if v.startswith(argument.value or "")]
    return Completion(values=values, total=len(values), has_more=False)


# Session-era methods the high-level server leaves to the application.
subscriptions: set[str] = set()


async def set_level(ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


async def subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscriptions.add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    subscriptions.discard(str(params.uri))
    return types.EmptyResult()


mcp._lowlevel_server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
mcp._lowlevel_server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
mcp._lowlevel_server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)

if __name__ == "__main__":
    mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
