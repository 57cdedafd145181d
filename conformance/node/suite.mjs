// The official `openai` Node SDK, directly against the fakes and through Switchback.
//
// Every case of ../cases.json is sent twice per mode, once to the fake provider itself and
// once through the gateway, and what the SDK returned (plain JSON objects, every field) is
// compared field by field, except for what the README says Switchback sets: the response
// `id`, `role` only on a choice's first delta, and `usage: null` on chunks (the gateway asks
// its upstream for usage). Errors compare the exception class and the status;
// through the gateway the SDK must not retry (`x-should-retry: false`). Writes a JSON report;
// exits 1 if any comparison differs. Run by ../run.sh.

import { readFileSync, writeFileSync } from 'node:fs';
import OpenAI, { AzureOpenAI } from 'openai';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]?.startsWith('--') || all[i + 1] === undefined ? true : all[i + 1]]);
    return acc;
  }, []),
);
const fakes = JSON.parse(args.fakes);
const spec = JSON.parse(readFileSync(args.cases, 'utf8'));
const tools = [spec.weather_tool];
const version = JSON.parse(readFileSync(new URL('./node_modules/openai/package.json', import.meta.url), 'utf8')).version;

function sdk(baseURL, apiKey, counter, readTimeout) {
  return new OpenAI({
    baseURL,
    apiKey,
    timeout: readTimeout ? readTimeout * 1000 : 30_000,
    maxRetries: 2,
    fetch: (url, init) => {
      counter.n += 1;
      return fetch(url, init);
    },
  });
}

// The SDK's Azure client: `api-key` header, `/openai/deployments/{model}/...` paths.
function azureSdk(gatewayURL, apiKey, counter) {
  return new AzureOpenAI({
    endpoint: gatewayURL.replace(/\/v1$/, ''),
    apiKey,
    apiVersion: '2024-10-21',
    timeout: 30_000,
    maxRetries: 2,
    fetch: (url, init) => {
      counter.n += 1;
      return fetch(url, init);
    },
  });
}

const clone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));

function withoutId(o) {
  o = clone(o);
  if (o && typeof o === 'object' && 'id' in o) o.id = '<id>';
  return o;
}

// `usage: null` on a chunk reads as no usage: the gateway asks its upstream for usage.
function withoutNullUsage(o) {
  o = clone(o);
  if (o && o.usage === null) delete o.usage;
  return o;
}

function stripLaterRoles(chunks) {
  const seen = new Set();
  return chunks.map((c) => {
    c = clone(c);
    for (const choice of c.choices ?? []) {
      const delta = choice.delta ?? {};
      if ('role' in delta) {
        if (seen.has(choice.index)) delete delta.role;
        seen.add(choice.index);
      }
    }
    return c;
  });
}

function firstDifference(want, got, path = '') {
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isObj(want) && isObj(got)) {
    for (const k of new Set([...Object.keys(want), ...Object.keys(got)])) {
      if (!(k in want)) return `${path}.${k}: only through the gateway: ${JSON.stringify(got[k]).slice(0, 200)}`;
      if (!(k in got)) return `${path}.${k}: only directly: ${JSON.stringify(want[k]).slice(0, 200)}`;
      const d = firstDifference(want[k], got[k], `${path}.${k}`);
      if (d) return d;
    }
    return null;
  }
  if (Array.isArray(want) && Array.isArray(got)) {
    for (let i = 0; i < Math.min(want.length, got.length); i++) {
      const d = firstDifference(want[i], got[i], `${path}[${i}]`);
      if (d) return d;
    }
    return want.length === got.length ? null : `${path}: ${want.length} item(s) directly, ${got.length} through the gateway`;
  }
  return JSON.stringify(want) === JSON.stringify(got)
    ? null
    : `${path}: directly ${JSON.stringify(want).slice(0, 200)}, through the gateway ${JSON.stringify(got).slice(0, 200)}`;
}

const textOf = (c) => ({ content: c.choices[0].message.content ?? null, finish_reason: c.choices[0].finish_reason ?? null });

function textOfChunks(chunks) {
  let content = '';
  let finish = null;
  for (const c of chunks) {
    for (const ch of c.choices ?? []) {
      if (ch.index !== 0) continue;
      content += ch.delta?.content ?? '';
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  return { content, finish_reason: finish };
}

async function call(client, kase, mode, model) {
  const params = { model, messages: [{ role: 'user', content: 'say something' }], ...(kase.params ?? {}) };
  if (kase.tools) params.tools = tools;
  if (mode === 'stream' || mode === 'helper') Object.assign(params, kase.stream_params ?? {});
  const chat = client.chat.completions;
  if (mode === 'non_stream') return clone(await chat.create(params));
  if (mode === 'stream') {
    const out = [];
    for await (const c of await chat.create({ ...params, stream: true })) out.push(clone(c));
    return out;
  }
  if (mode === 'helper') {
    const s = chat.stream(params);
    for await (const _ of s) {
      // drain
    }
    return clone(await s.finalChatCompletion());
  }
  if (mode === 'parse') {
    return clone(
      await chat.parse({
        ...params,
        response_format: {
          type: 'json_schema',
          json_schema: {
            name: 'answer',
            strict: true,
            schema: {
              type: 'object',
              properties: { steps: { type: 'array', items: { type: 'string' } }, final_answer: { type: 'string' } },
              required: ['steps', 'final_answer'],
              additionalProperties: false,
            },
          },
        },
      }),
    );
  }
  throw new Error(mode);
}

async function outcome(client, counter, kase, mode, model) {
  counter.n = 0;
  try {
    return ['ok', await call(client, kase, mode, model), counter.n];
  } catch (e) {
    if (e instanceof OpenAI.APIError && e.status) {
      const err = e.error ?? {};
      return ['error', { class: e.constructor.name, status: e.status, type: err.type ?? null }, counter.n];
    }
    return ['crash', `${e?.constructor?.name}: ${e?.message}`, counter.n];
  }
}

function compare(kase, mode, direct, gateway) {
  const [dk, dv] = direct;
  const [gk, gv, gn] = gateway;
  // The SDK fails on what the provider sends, through the gateway alike: indistinguishable.
  if (dk === 'crash' && gk === 'crash' && dv === gv) return null;
  if (dk === 'crash') return `the SDK failed directly: ${dv}`;
  if (gk === 'crash') return `the SDK failed through the gateway: ${gv}`;
  if (kase.expect_error) {
    if (dk !== 'error' || dv.class !== kase.expect_error) return `directly: expected ${kase.expect_error}, got ${JSON.stringify(dv).slice(0, 200)}`;
    if (gk !== 'error') return `through the gateway: expected ${kase.expect_error}, got an answer`;
    if (gv.class !== dv.class || gv.status !== dv.status) return `directly ${JSON.stringify(dv)}, through the gateway ${JSON.stringify(gv)}`;
    if (gn !== 1) return `the SDK sent ${gn} requests through the gateway (its retries multiplied the gateway's)`;
    return null;
  }
  if (dk !== 'ok' || gk !== 'ok') return `directly ${dk}, through the gateway ${gk}: ${JSON.stringify(gv).slice(0, 200)}`;
  if (kase.compare === 'text') {
    const text = (v) => (Array.isArray(v) ? textOfChunks(v) : textOf(v));
    return firstDifference(text(dv), text(gv), 'text');
  }
  if (mode === 'stream') {
    const want = stripLaterRoles(dv).map((c) => withoutNullUsage(withoutId(c)));
    const got = gv.map((c) => withoutNullUsage(withoutId(c)));
    return firstDifference(want, got, 'chunks');
  }
  const d = firstDifference(withoutNullUsage(withoutId(dv)), withoutNullUsage(withoutId(gv)), 'completion');
  if (d === null && kase.schema) {
    const wc = dv.choices[0].message.content;
    const gc = gv.choices[0].message.content;
    if (wc !== gc) return `content (key order): directly ${JSON.stringify(wc)}, through the gateway ${JSON.stringify(gc)}`;
  }
  return d;
}

const results = [];
let failed = 0;
for (const kase of spec.cases) {
  const [host, directModel] = kase.direct;
  const dc = { n: 0 };
  const gc = { n: 0 };
  const direct = sdk(fakes[host], 'sk-direct', dc, kase.read_timeout);
  const gateway = kase.client === 'azure'
    ? azureSdk(args.gateway, args.key, gc)
    : sdk(args.gateway, args.key, gc, kase.read_timeout);
  const row = { feature: kase.feature, modes: {}, direct_failures: [] };
  for (const mode of kase.modes) {
    const d = await outcome(direct, dc, kase, kase.direct_mode ?? mode, directModel);
    const g = await outcome(gateway, gc, kase, mode, kase.group);
    if (args.sabotage && kase.group === 'plain' && mode === 'non_stream' && d[0] === 'ok') {
      d[1].choices[0].message.content += ' (sabotaged)';
    }
    if (d[0] !== (kase.expect_error ? 'error' : 'ok')) row.direct_failures.push(`${mode}: ${JSON.stringify(d[1]).slice(0, 300)}`);
    const diff = compare(kase, mode, d, g);
    row.modes[mode] = { same: diff === null, detail: diff };
    if (diff !== null) {
      failed += 1;
      console.error(`DIFFERS  node  ${kase.feature} [${mode}]: ${diff}`);
    }
  }
  results.push(row);
}
writeFileSync(args.out, JSON.stringify({ sdk: 'node', package: 'openai', version, results }, null, 1));
console.error(`node openai ${version}: ${results.length} cases, ${failed} difference(s)`);
process.exit(failed ? 1 : 0);
