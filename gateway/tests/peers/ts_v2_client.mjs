// The official TypeScript SDK v2 client (the stateless 2026-07-28 revision) through the gateway.
// usage: node ts_v2_client.mjs PEERS_DIR URL [TOKEN]
const [peers, url, token] = process.argv.slice(2);
const mod = await import(`${peers}/node_modules/@modelcontextprotocol/client/dist/index.mjs`);
const { Client, StreamableHTTPClientTransport } = mod;
const out = { mode: "ts-v2" };
const opts = token ? { requestInit: { headers: { Authorization: `Bearer ${token}` } } } : {};
const client = new Client({ name: "palisade-ts-v2-test", version: "1.0.0" });
await client.connect(new StreamableHTTPClientTransport(new URL(url), opts));
out.discover = client.getDiscoverResult?.()?.supportedVersions ?? null;
const tools = await client.listTools();
out.tools = tools.tools.map((t) => t.name);
const echo = await client.callTool({ name: "echo", arguments: { message: "hello through palisade" } });
out.echo = echo.content?.[0]?.text ?? null;
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
