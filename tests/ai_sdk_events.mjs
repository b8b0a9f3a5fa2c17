// The AI SDK's real MCP Events client against a real `stripe-inbox serve`, driven by test_event_webhooks.py over
// stdin/stdout (one JSON object a line): createMCPClient with experimental_events lists the event types and
// subscribes by webhook; createMCPEventWebhook, mounted on a loopback HTTP server, verifies the callback and hands
// each event to onEvent, which prints it. "unsubscribe" on stdin ends the subscription; then the script exits.
//
//   node ai_sdk_events.mjs <mcp url> <access token> '<arguments as JSON>'
import { createServer } from 'node:http';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { createMCPClient, experimental_createMCPEventWebhook as createMCPEventWebhook } from '@ai-sdk/mcp';

const [mcpUrl, token, argumentsJson] = process.argv.slice(2);
const say = message => process.stdout.write(JSON.stringify(message) + '\n');

// The client's private, durable-enough store of its subscriptions (secrets included): a Map for the test.
const saved = new Map();
const store = {
  async get(key) { return saved.get(key); },
  async getById(id) { return [...saved.values()].find(each => each.id === id); },
  async set(subscription) { saved.set(subscription.key, structuredClone(subscription)); },
  async update(key, patch) { const found = saved.get(key); if (found) saved.set(key, { ...found, ...patch }); },
  async delete(key) { saved.delete(key); },
};

const handler = createMCPEventWebhook({
  store,
  async onEvent({ subscription, event }) { say({ step: 'event', subscription: subscription.id, event }); },
  async onGap({ gap }) { say({ step: 'gap', cursor: gap.cursor }); },
  async onTerminated({ termination }) { say({ step: 'terminated', error: termination.error }); },
  onError(error) { say({ step: 'handler-error', message: String(error) }); },
});

// Node's http server in front of the Web Request/Response handler.
const receiver = createServer(async (request, response) => {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  const url = `http://127.0.0.1:${receiver.address().port}${request.url}`;
  const answer = await handler(new Request(url, {
    method: request.method,
    headers: Object.entries(request.headers).map(([name, value]) => [name, String(value)]),
    body: request.method === 'POST' ? Buffer.concat(chunks) : undefined,
  }));
  response.writeHead(answer.status, Object.fromEntries(answer.headers));
  response.end(Buffer.from(await answer.arrayBuffer()));
});
receiver.listen(0, '127.0.0.1');
await once(receiver, 'listening');

const client = await createMCPClient({
  transport: { type: 'http', url: mcpUrl, headers: { Authorization: `Bearer ${token}` } },
  experimental_events: { store },
});
const lines = createInterface({ input: process.stdin });
try {
  const listed = await client.experimental_events.list();
  say({ step: 'listed', events: listed.events.map(each => ({ name: each.name, delivery: each.delivery })) });
  const subscribed = await client.experimental_events.subscribe({
    name: 'stripe.event',
    arguments: JSON.parse(argumentsJson),
    delivery: {
      mode: 'webhook',
      url: `http://127.0.0.1:${receiver.address().port}/mcp-events?app=test`,
      allowInsecureLocalhost: true,
    },
  });
  say({ step: 'subscribed', ...subscribed });
  for await (const line of lines) {
    if (line.trim() === 'unsubscribe') break;
  }
  await client.experimental_events.unsubscribe({ id: subscribed.id });
  say({ step: 'unsubscribed', stored: saved.size });
} catch (error) {
  say({ step: 'failed', message: String(error), cause: String(error?.cause ?? '') });
} finally {
  lines.close();
  await client.close();
  receiver.close();
}
