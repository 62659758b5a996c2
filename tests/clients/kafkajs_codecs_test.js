#!/usr/bin/env node
/*
 * Client compatibility test: kafkajs with gzip and without compression (the
 * codecs kafkajs ships; snappy/lz4/zstd need third-party codec packages), each
 * with a plain producer and an idempotent one (idempotent: true,
 * maxInFlightRequests: 1, acks -1 — which makes kafkajs call InitProducerId
 * and number its batches).
 *
 * Per run, on a fresh 3-partition topic:
 *   - the producer sends NSENDS send() calls of BATCH messages (some keyed,
 *     some to explicit partitions; a few large, very compressible values), and
 *     the RecordMetadata base offsets must tile each partition 0..n-1 in send
 *     order;
 *   - a consumer group reads from the beginning until it has every message:
 *     exactly the messages sent (keys, values, headers), each once, in send
 *     order per partition, at the offsets the producer was told;
 *   - a raw Fetch (python3 clientlib.py batches ...) shows every stored batch
 *     has the codec kafkajs used and a producer id exactly when idempotent.
 *
 * Uses $BOOTSTRAP if set, otherwise runs itself under with_broker.sh (fresh
 * broker). Exits non-zero with a "FAIL: ..." line on failure.
 */
'use strict'

const path = require('path')
const { spawnSync } = require('child_process')

const HERE = __dirname
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const NAME = 'kafkajs_codecs_test'
const BROKER_ARGS = ['--set', 'group.initial.rebalance.delay.ms=300']
const PARTS = 3
const NSENDS = 12
const BATCH = 250
const OVERALL_TIMEOUT_MS = 240000

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const ts = () => new Date().toISOString().slice(11, 23)
const log = msg => process.stderr.write(`[${ts()}] ${msg}\n`)

class TestFailure extends Error {}
const check = (cond, msg) => {
  if (!cond) throw new TestFailure(msg)
}
const checkEq = (expected, actual, what) => {
  const e = JSON.stringify(expected)
  const a = JSON.stringify(actual)
  if (e !== a) {
    const cut = s => (s.length > 600 ? s.slice(0, 600) + '...' : s)
    throw new TestFailure(`${what}: expected ${cut(e)}, got ${cut(a)}`)
  }
  log(`ok: ${what}`)
}

function rawBatches (bootstrap, topic) {
  const r = spawnSync('python3', [path.join(HERE, 'clientlib.py'), 'batches', bootstrap, topic, String(PARTS)],
    { encoding: 'utf8', timeout: 60000 })
  if (r.status !== 0) throw new TestFailure(`raw fetch of ${topic} failed: ${r.stderr || r.error}`)
  return JSON.parse(r.stdout)
}

async function runOne (kafka, bootstrap, codecName, idempotent) {
  const { CompressionTypes } = require('kafkajs')
  const compression = codecName === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None
  const topic = `kjs-codec-${codecName}-${idempotent ? 'idem' : 'plain'}`
  const t0 = Date.now()

  const admin = kafka.admin()
  await admin.connect()
  check(await admin.createTopics({ topics: [{ topic, numPartitions: PARTS, replicationFactor: 1 }], waitForLeaders: true }),
    `createTopics ${topic} returned false`)
  await admin.disconnect()

  const producer = kafka.producer(idempotent ? { idempotent: true, maxInFlightRequests: 1 } : {})
  await producer.connect()
  const sent = [] // {partition, offset, key, value, headers}
  const nextOffset = new Array(PARTS).fill(0)
  for (let s = 0; s < NSENDS; s++) {
    const messages = []
    for (let j = 0; j < BATCH; j++) {
      const i = s * BATCH + j
      const big = i % 200 === 0
      const value = big ? `${codecName}-${idempotent}-${i} `.repeat(1000) : `${codecName} idem=${idempotent} message ${i} payload ${(i * 7919) % 100003}`
      const m = { value, headers: { idx: String(i) } }
      if (i % 3 === 0) m.key = `key-${i % 17}`
      else m.partition = i % PARTS
      messages.push(m)
    }
    const meta = await producer.send({ topic, compression, acks: -1, messages })
    // kafkajs returns one RecordMetadata per partition with the base offset of the
    // messages it put there; messages keep their relative order within a partition.
    const byPart = new Map()
    for (const md of meta) {
      check(md.errorCode === 0, `send ${s}: partition ${md.partition} error ${md.errorCode}`)
      byPart.set(md.partition, Number(md.baseOffset))
    }
    // recompute which partition each message went to: kafkajs's default partitioner
    // (murmur2 of the key) for keyed messages, explicit otherwise
    const { Partitioners } = require('kafkajs')
    const partitioner = Partitioners.DefaultPartitioner()
    const partitionMetadata = Array.from({ length: PARTS }, (_, p) => ({ partitionId: p, leader: 1 }))
    const perPart = new Map()
    for (const m of messages) {
      const p = m.partition != null ? m.partition : partitioner({ topic, partitionMetadata, message: m })
      if (!perPart.has(p)) perPart.set(p, [])
      perPart.get(p).push(m)
    }
    for (const [p, ms] of perPart) {
      check(byPart.has(p), `send ${s}: no metadata for partition ${p}`)
      check(byPart.get(p) === nextOffset[p],
        `send ${s}: partition ${p} base offset ${byPart.get(p)}, expected ${nextOffset[p]} (offsets must tile the partition)`)
      for (const m of ms) {
        sent.push({ partition: p, offset: nextOffset[p]++, key: m.key != null ? m.key : null, value: m.value, idx: m.headers.idx })
      }
    }
  }
  await producer.disconnect()
  const total = NSENDS * BATCH
  checkEq(total, sent.length, `${topic}: messages acknowledged`)

  // ------------------------------------------------------------------ consume
  const consumer = kafka.consumer({ groupId: `g-${topic}`, sessionTimeout: 10000, heartbeatInterval: 1000 })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const got = new Map() // "p/o" -> message
  const order = new Array(PARTS).fill(-1)
  const problems = []
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const off = Number(message.offset)
      if (off !== order[partition] + 1) problems.push(`partition ${partition}: offset ${off} after ${order[partition]}`)
      order[partition] = off
      const k = `${partition}/${off}`
      if (got.has(k)) problems.push(`${k} consumed twice`)
      got.set(k, {
        key: message.key == null ? null : message.key.toString(),
        value: message.value.toString(),
        idx: message.headers && message.headers.idx ? message.headers.idx.toString() : null
      })
    }
  })
  const deadline = Date.now() + 90000
  while (got.size < total && Date.now() < deadline) await sleep(100)
  await sleep(500) // anything extra (a duplicate) would show up now
  await consumer.disconnect()
  check(problems.length === 0, `${topic}: ${problems.slice(0, 5).join('; ')}`)
  checkEq(total, got.size, `${topic}: messages consumed`)
  let bad = 0
  for (const m of sent) {
    const g = got.get(`${m.partition}/${m.offset}`)
    if (!g || g.key !== m.key || g.value !== m.value || g.idx !== m.idx) {
      if (bad++ < 3) log(`mismatch at ${m.partition}/${m.offset}: sent ${JSON.stringify(m).slice(0, 200)} got ${JSON.stringify(g || null).slice(0, 200)}`)
    }
  }
  check(bad === 0, `${topic}: ${bad} messages differ from what was sent`)
  log(`ok: ${topic}: ${total} messages consumed back exactly, in order`)

  // ------------------------------------------------------------ stored batches
  const batches = rawBatches(bootstrap, topic)
  check(batches.length > 0, `${topic}: no stored batches`)
  const want = codecName === 'gzip' ? 'gzip' : 'none'
  for (const b of batches) {
    check(b.codec_name === want, `${topic}: stored batch ${b.partition}/${b.base_offset} has codec ${b.codec_name}, kafkajs used ${want}`)
    check((b.producer_id >= 0) === idempotent,
      `${topic}: stored batch ${b.partition}/${b.base_offset} has producer id ${b.producer_id} (idempotent=${idempotent})`)
  }
  if (idempotent) {
    const pids = new Set(batches.map(b => `${b.producer_id}/${b.producer_epoch}`))
    checkEq(1, pids.size, `${topic}: one producer id/epoch`)
    for (let p = 0; p < PARTS; p++) {
      let seq = 0
      for (const b of batches.filter(x => x.partition === p)) {
        check(b.base_sequence === seq, `${topic}: partition ${p} batch at ${b.base_offset} sequence ${b.base_sequence}, want ${seq}`)
        seq += b.records
      }
    }
  }
  log(`ok: ${topic}: ${batches.length} stored batches, codec ${want}${idempotent ? ', producer id ' + batches[0].producer_id : ''} (${Date.now() - t0} ms)`)
}

async function main () {
  const { Kafka, logLevel } = require('kafkajs')
  const bootstrap = process.env.BOOTSTRAP
  log(`kafkajs ${require('kafkajs/package.json').version}, bootstrap ${bootstrap}`)
  const kafka = new Kafka({ clientId: 'kjs-codecs', brokers: [bootstrap], logLevel: logLevel.WARN })
  for (const [codec, idem] of [['none', false], ['gzip', false], ['gzip', true], ['none', true]]) {
    await runOne(kafka, bootstrap, codec, idem)
  }
}

if (!process.env.BOOTSTRAP) {
  // No broker given: run this script under with_broker.sh (fresh broker).
  const r = spawnSync('bash', [path.join(HERE, 'with_broker.sh'), ...BROKER_ARGS, '--',
    process.execPath, __filename, ...process.argv.slice(2)], { stdio: 'inherit' })
  process.exit(r.status == null ? 1 : r.status)
} else {
  const timer = setTimeout(() => {
    process.stderr.write(`${NAME}: FAIL: timed out after ${OVERALL_TIMEOUT_MS}ms\n`)
    process.exit(1)
  }, OVERALL_TIMEOUT_MS)
  main().then(() => {
    clearTimeout(timer)
    process.stdout.write(`${NAME}: PASS\n`)
    process.exit(0)
  }, e => {
    clearTimeout(timer)
    if (e instanceof TestFailure) {
      process.stderr.write(`${NAME}: FAIL: ${e.message}\n`)
    } else {
      process.stderr.write(`${e && e.stack ? e.stack : e}\n${NAME}: FAIL: unexpected exception (see above)\n`)
    }
    process.exit(1)
  })
}
