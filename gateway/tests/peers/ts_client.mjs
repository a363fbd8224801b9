// The official TypeScript SDK v1 client (session era) through the gateway.
// usage: node ts_client.mjs PEERS_DIR URL [TOKEN]
const [peers, url, token] = process.argv.slice(2);
const sdk = `${peers}/node_modules/@modelcontextprotocol/sdk/dist/esm`;
const { Client } = await import(`${sdk}/client/index.js`);
const { StreamableHTTPClientTransport } = await import(`${sdk}/client/streamableHttp.js`);
const out = { mode: "ts-v1" };
const opts = token ? { requestInit: { headers: { Authorization: `Bearer ${token}` } } } : {};
const client = new Client({ name: "palisade-ts-v1-test", version: "1.0.0" });
await client.connect(new StreamableHTTPClientTransport(new URL(url), opts));
out.protocolVersion = client.transport?.protocolVersion ?? null;
const tools = await client.listTools();
out.tools = tools.tools.map((t) => t.name);
const echo = await client.callTool({ name: "echo", arguments: { message: "hello through palisade" } });
out.echo = echo.content?.[0]?.text ?? null;
const progress = [];
if (out.tools.includes("trigger-long-running-operation")) {
  await client.callTool({ name: "trigger-long-running-operation", arguments: { duration: 1, steps: 4 } }, undefined, {
    onprogress: (p) => progress.push(p.progress),
  });
}
out.progress = progress;
const res = await client.listResources();
out.resources = res.resources.map((r) => r.uri);
if (res.resources.length) {
  const rr = await client.readResource({ uri: res.resources[0].uri });
  out.read = rr.contents[0].text ?? "";
}
const prompts = await client.listPrompts();
out.prompts = prompts.prompts.map((p) => p.name);
await client.close();
console.log(JSON.stringify(out));
