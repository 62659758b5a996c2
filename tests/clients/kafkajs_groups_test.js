#!/usr/bin/env node
/*
 * Client compatibility test: consumer groups with kafkajs (plain node, no test
 * framework), following the flow a kafkajs tutorial teaches.
 *
 *  1. admin creates `rider-updates` with 2 partitions; a producer sends
 *     messages with explicit partitions and keys.
 *  2. Two consumer groups (one in-process consumer each, fromBeginning: true)
 *     each receive every message, in per-partition order; admin.fetchOffsets
 *     returns the committed offsets; describeGroups shows Stable with one
 *     member; listGroups lists both groups; after disconnect the groups are
 *     Empty and keep their offsets.
 *  3. Group `rider-dispatch`, members run as child processes (this file with
 *     argv `member NAME`) and report GROUP_JOIN events (with the generation id,
 *     taken from kafkajs's "Received assignment" debug log) and every message
 *     over IPC:
 *       - two members each get exactly one partition, and new messages reach
 *         only the member that owns their partition;
 *       - a third member joining triggers a rebalance: the existing members
 *         see GROUP_JOIN with a new generation;
 *       - a member holding a partition is SIGKILLed (no LeaveGroup); its
 *         partitions move to the survivors and messages sent to them after
 *         the kill are consumed within sessionTimeout + a margin;
 *       - describeGroups / fetchOffsets agree at the end.
 *
 * Uses $BOOTSTRAP if set, otherwise runs itself under with_broker.sh (fresh
 * broker). Exits non-zero with a "FAIL: ..." line on failure.
 */
'use strict'

const path = require('path')
const { fork, spawnSync } = require('child_process')

const HERE = __dirname
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const NAME = 'kafkajs_groups_test'
// Short initial rebalance delay keeps the test fast while still letting
// members that start together join the same first generation.
const BROKER_ARGS = ['--set', 'group.initial.rebalance.delay.ms=300']
const TOPIC = 'rider-updates'
const SESSION_TIMEOUT = 8000
const HEARTBEAT_INTERVAL = 1000
const REBALANCE_TIMEOUT = 15000
// Time allowed, after the kill, beyond the session timeout for the broker to
// notice the expiry, rebalance and the survivors to fetch.
const KILL_MARGIN_MS = 10000
const OVERALL_TIMEOUT_MS = 240000

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const ts = () => new Date().toISOString().slice(11, 23)
const log = msg => process.stderr.write(`[${ts()}] ${msg}\n`)

class TestFailure extends Error {}
const check = (cond, msg) => {
  if (!cond) throw new TestFailure(msg)
}
// JSON with object keys sorted, so comparisons do not depend on key order.
const canon = v => {
  if (Array.isArray(v)) return v.map(canon)
  if (v && typeof v === 'object') {
    const o = {}
    for (const k of Object.keys(v).sort()) o[k] = canon(v[k])
    return o
  }
  return v
}
const stable = v => JSON.stringify(canon(v))
const checkEq = (expected, actual, what) => {
  const e = stable(expected)
  const a = stable(actual)
  if (e !== a) {
    const cut = s => (s.length > 600 ? s.slice(0, 600) + '...' : s)
    throw new TestFailure(`${what}: expected ${cut(e)}, got ${cut(a)}`)
  }
  log(`ok: ${what}`)
}

// waitFor(pred, timeoutMs, what): poll pred (sync or async) until truthy.
async function waitFor(pred, timeoutMs, what, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      last = await pred()
    } catch (e) {
      if (e instanceof TestFailure) throw e
      last = undefined
      if (Date.now() >= deadline) throw new TestFailure(`${what}: last attempt threw ${e && e.stack ? e.stack : e}`)
    }
    if (last) return last
    if (Date.now() >= deadline) throw new TestFailure(`timed out after ${timeoutMs}ms waiting for ${what}`)
    await sleep(intervalMs)
  }
}

// ----------------------------------------------------------------- member
// Child process: one kafkajs consumer in group argv[4], reporting over IPC.
async function runMember(name, groupId) {
  const { Kafka, logLevel } = require('kafkajs')
  const send = m => {
    if (process.connected) process.send({ name, ...m })
  }
  let lastGeneration = null
  const logCreator = () => ({ namespace, level, label, log: entry }) => {
    const { message, ...extra } = entry
    if (message === 'Received assignment' && extra.generationId != null) {
      lastGeneration = extra.generationId
    }
    if (level <= logLevel.WARN) {
      process.stderr.write(`[${ts()}] [${name}] kafkajs ${label} ${namespace}: ${message} ${JSON.stringify(extra)}\n`)
    }
  }
  const kafka = new Kafka({
    clientId: name,
    brokers: [process.env.BOOTSTRAP],
    logLevel: logLevel.DEBUG,
    logCreator,
  })
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout: SESSION_TIMEOUT,
    rebalanceTimeout: REBALANCE_TIMEOUT,
    heartbeatInterval: HEARTBEAT_INTERVAL,
    maxWaitTimeInMs: 500,
  })
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    send({
      type: 'join',
      generationId: lastGeneration,
      memberId: payload.memberId,
      leaderId: payload.leaderId,
      isLeader: payload.isLeader,
      protocol: payload.groupProtocol,
      assignment: (payload.memberAssignment[TOPIC] || []).slice().sort((a, b) => a - b),
      other: Object.keys(payload.memberAssignment).filter(t => t !== TOPIC),
    })
  })
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    send({ type: 'crash', error: String(payload.error && payload.error.stack ? payload.error.stack : payload.error) })
  })
  // If the parent goes away, do not linger.
  process.on('disconnect', () => process.exit(3))
  process.on('message', async m => {
    if (m && m.type === 'stop') {
      try {
        await consumer.disconnect()
        send({ type: 'stopped' })
      } catch (e) {
        send({ type: 'crash', error: `disconnect failed: ${e}` })
      }
      setTimeout(() => process.exit(0), 50)
    }
  })
  await consumer.connect()
  await consumer.subscribe({ topics: [TOPIC], fromBeginning: true })
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      send({
        type: 'msg',
        partition,
        offset: Number(message.offset),
        key: message.key ? message.key.toString() : null,
        value: message.value ? message.value.toString() : null,
      })
    },
  })
  send({ type: 'running' })
}

// Parent-side handle on a member child process.
class Member {
  constructor(name, groupId) {
    this.name = name
    this.joins = []
    this.msgs = []
    this.crashes = []
    this.exited = null
    this.stopped = false
    this.proc = fork(__filename, ['member', name, groupId], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: process.env,
    })
    this.proc.on('message', m => {
      if (m.type === 'join') {
        this.joins.push({ ...m, at: Date.now() })
        log(`${name}: GROUP_JOIN generation ${m.generationId} member ${m.memberId} leader=${m.isLeader} ` +
            `protocol ${m.protocol} assignment ${TOPIC}${stable(m.assignment)}`)
      } else if (m.type === 'msg') {
        this.msgs.push({ ...m, at: Date.now() })
      } else if (m.type === 'crash') {
        this.crashes.push(m.error)
        log(`${name}: consumer CRASH: ${m.error}`)
      } else if (m.type === 'stopped') {
        this.stopped = true
      }
    })
    this.proc.on('exit', (code, signal) => {
      this.exited = { code, signal }
      log(`${name}: exited (code ${code}, signal ${signal})`)
    })
  }
  get lastJoin() {
    return this.joins.length ? this.joins[this.joins.length - 1] : null
  }
  kill(sig) {
    if (this.exited == null) this.proc.kill(sig)
  }
}

const MEMBERS = []

// All members alive, last GROUP_JOIN of each in the same generation, and
// their assignments partition {0, 1}. Returns the generation or null.
function settled(members, minGeneration) {
  const last = members.map(m => m.lastJoin)
  if (last.some(j => j == null)) return null
  const gen = last[0].generationId
  if (gen == null || gen < minGeneration) return null
  if (last.some(j => j.generationId !== gen)) return null
  const all = last.flatMap(j => j.assignment).sort()
  if (stable(all) !== stable([0, 1])) return null
  return gen
}

function checkNoCrash(members) {
  for (const m of members) {
    check(m.crashes.length === 0, `member ${m.name} consumer crashed: ${m.crashes[0]}`)
    check(m.exited == null || m.stopped, `member ${m.name} exited unexpectedly: ${stable(m.exited)}`)
  }
}

// ------------------------------------------------------------------- main
async function main() {
  const { Kafka, logLevel, AssignerProtocol } = require('kafkajs')
  const bootstrap = process.env.BOOTSTRAP
  log(`kafkajs ${require('kafkajs/package.json').version}, node ${process.version}, bootstrap ${bootstrap}`)
  const kafka = new Kafka({ clientId: 'kjs-groups-main', brokers: [bootstrap], logLevel: logLevel.WARN })
  const decodeAssignment = buf => {
    const a = AssignerProtocol.MemberAssignment.decode(buf)
    return a ? a.assignment : null
  }

  const admin = kafka.admin()
  await admin.connect()

  // ------------------------------------------------------ 1. topic + produce
  const created = await admin.createTopics({
    topics: [{ topic: TOPIC, numPartitions: 2, replicationFactor: 1 }],
    waitForLeaders: true,
  })
  checkEq(true, created, `admin.createTopics(${TOPIC}) returned true`)
  const md = await admin.fetchTopicMetadata({ topics: [TOPIC] })
  checkEq([0, 1], md.topics[0].partitions.map(p => p.partitionId).sort(), `${TOPIC} partitions`)

  const producer = kafka.producer({ allowAutoTopicCreation: false }) // idempotent: false (default)
  await producer.connect()
  // expected[p] = [{offset, key, value}] in send order
  const expected = { 0: [], 1: [] }
  const sendTo = async (partition, count, tag) => {
    const base = expected[partition].length
    const messages = []
    for (let i = 0; i < count; i++) {
      const n = base + i
      const key = `rider-${partition === 0 ? 'north' : 'south'}-${n % 3}`
      const value = JSON.stringify({ tag, rider: key, n, lat: 52.5 + n / 1000, partition })
      messages.push({ partition, key, value })
    }
    const res = await producer.send({ topic: TOPIC, messages })
    check(res.length === 1 && res[0].partition === partition && res[0].errorCode === 0,
      `producer.send to partition ${partition}: unexpected result ${stable(res)}`)
    const baseOffset = Number(res[0].baseOffset)
    checkEq(base, baseOffset, `${tag}: baseOffset of ${count} messages sent to partition ${partition}`)
    messages.forEach((m, i) => expected[partition].push({ offset: baseOffset + i, key: m.key, value: m.value }))
    return messages.map((m, i) => ({ partition, offset: baseOffset + i, key: m.key, value: m.value }))
  }
  // One send with messages for both partitions, as in the tutorial.
  {
    const messages = []
    for (let i = 0; i < 10; i++) {
      const partition = i % 2
      const key = `rider-${partition === 0 ? 'north' : 'south'}-${i % 3}`
      messages.push({ partition, key, value: JSON.stringify({ tag: 'initial', rider: key, i }) })
    }
    const res = await producer.send({ topic: TOPIC, messages })
    checkEq([[0, 0], [1, 0]], res.map(r => [r.partition, r.errorCode]).sort(), 'initial send: one result per partition, no error')
    for (const r of res) checkEq('0', r.baseOffset, `initial send: partition ${r.partition} baseOffset`)
    for (const m of messages) {
      expected[m.partition].push({ offset: expected[m.partition].length, key: m.key, value: m.value })
    }
  }
  const initialCount = 10

  // ----------------------------------------- 2. two groups, each gets all
  const groupNames = ['rider-dashboard', 'rider-billing']
  const groupConsumers = []
  for (const groupId of groupNames) {
    const consumer = kafka.consumer({
      groupId,
      sessionTimeout: 10000,
      heartbeatInterval: HEARTBEAT_INTERVAL,
      maxWaitTimeInMs: 500,
    })
    const rec = { groupId, consumer, got: { 0: [], 1: [] }, joins: [], crashed: null }
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => rec.joins.push(payload))
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      rec.crashed = payload.error
    })
    await consumer.connect()
    await consumer.subscribe({ topics: [TOPIC], fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        rec.got[partition].push({ offset: Number(message.offset), key: message.key.toString(), value: message.value.toString() })
      },
    })
    groupConsumers.push(rec)
  }
  for (const rec of groupConsumers) {
    await waitFor(() => {
      check(!rec.crashed, `consumer of ${rec.groupId} crashed: ${rec.crashed}`)
      return rec.got[0].length + rec.got[1].length >= initialCount
    }, 30000, `group ${rec.groupId} to receive ${initialCount} messages`)
  }
  await sleep(1000) // would surface duplicates
  for (const rec of groupConsumers) {
    for (const p of [0, 1]) {
      checkEq(expected[p], rec.got[p], `group ${rec.groupId}: partition ${p} messages (offset, key, value) from the beginning`)
    }
    checkEq(1, rec.joins.length, `group ${rec.groupId}: one GROUP_JOIN`)
    checkEq({ [TOPIC]: [0, 1] }, rec.joins[0].memberAssignment, `group ${rec.groupId}: single member assigned both partitions`)
  }
  const endOffsets = () => ({ 0: expected[0].length, 1: expected[1].length })
  const committed = async groupId => {
    const r = await admin.fetchOffsets({ groupId, topics: [TOPIC] })
    const t = r.find(x => x.topic === TOPIC)
    const out = {}
    for (const p of t ? t.partitions : []) out[p.partition] = Number(p.offset)
    return out
  }
  for (const groupId of groupNames) {
    const want = endOffsets()
    let last
    try {
      await waitFor(async () => {
        last = await committed(groupId)
        return stable(last) === stable(want)
      }, 15000, `committed offsets of ${groupId}`, 300)
    } catch (e) {
      throw new TestFailure(`admin.fetchOffsets(${groupId}): expected ${stable(want)}, last got ${stable(last)}`)
    }
    checkEq(want, last, `admin.fetchOffsets(${groupId}) after auto-commit`)
  }
  {
    const { groups } = await admin.describeGroups(groupNames)
    checkEq(groupNames.slice().sort(), groups.map(g => g.groupId).sort(), 'describeGroups: group ids')
    for (const g of groups) {
      checkEq([0, 'Stable', 'consumer', 1], [g.errorCode, g.state, g.protocolType, g.members.length],
        `describeGroups(${g.groupId}): [errorCode, state, protocolType, #members]`)
      checkEq('RoundRobinAssigner', g.protocol, `describeGroups(${g.groupId}): protocol`)
      checkEq({ [TOPIC]: [0, 1] }, decodeAssignment(g.members[0].memberAssignment),
        `describeGroups(${g.groupId}): member assignment`)
      const rec = groupConsumers.find(r => r.groupId === g.groupId)
      checkEq(rec.joins[0].memberId, g.members[0].memberId, `describeGroups(${g.groupId}): member id matches GROUP_JOIN`)
      checkEq('kjs-groups-main', g.members[0].clientId, `describeGroups(${g.groupId}): clientId`)
    }
  }
  {
    const { groups } = await admin.listGroups()
    for (const groupId of groupNames) {
      const g = groups.find(x => x.groupId === groupId)
      check(g, `listGroups does not list ${groupId}: ${stable(groups)}`)
      checkEq('consumer', g.protocolType, `listGroups: ${groupId} protocolType`)
    }
  }
  for (const rec of groupConsumers) await rec.consumer.disconnect()
  {
    const { groups } = await admin.describeGroups(groupNames)
    for (const g of groups) {
      checkEq(['Empty', 0], [g.state, g.members.length], `describeGroups(${g.groupId}) after disconnect: [state, #members]`)
    }
    for (const groupId of groupNames) {
      checkEq(endOffsets(), await committed(groupId), `admin.fetchOffsets(${groupId}) after disconnect`)
    }
  }

  // ------------------------------------------- 3. members as child processes
  const GROUP = 'rider-dispatch'
  const a = new Member('member-a', GROUP)
  const b = new Member('member-b', GROUP)
  MEMBERS.push(a, b)
  const gen1 = await waitFor(() => {
    checkNoCrash(MEMBERS)
    return settled([a, b], 0)
  }, 45000, 'members a and b to settle in one generation covering both partitions', 100)
  log(`a and b settled in generation ${gen1}`)
  checkEq([1, 1], [a.lastJoin.assignment.length, b.lastJoin.assignment.length], 'two members: each gets exactly one partition')
  checkEq(a.lastJoin.leaderId, b.lastJoin.leaderId, 'two members: same leader id')
  check([a, b].filter(m => m.lastJoin.isLeader).length === 1, 'exactly one of a, b is leader')
  const owner = members => {
    const o = {}
    for (const m of members) for (const p of m.lastJoin.assignment) o[p] = m
    return o
  }
  {
    const { groups } = await admin.describeGroups([GROUP])
    const g = groups[0]
    checkEq(['Stable', 2], [g.state, g.members.length], `describeGroups(${GROUP}) with a, b: [state, #members]`)
    const byId = {}
    for (const m of g.members) byId[m.memberId] = decodeAssignment(m.memberAssignment)
    checkEq({ [a.lastJoin.memberId]: { [TOPIC]: a.lastJoin.assignment }, [b.lastJoin.memberId]: { [TOPIC]: b.lastJoin.assignment } },
      byId, `describeGroups(${GROUP}): members and their assignments match GROUP_JOIN`)
  }
  // The new group reads from the beginning: the initial messages all arrive.
  await waitFor(() => {
    checkNoCrash(MEMBERS)
    return new Set([...a.msgs, ...b.msgs].map(x => `${x.partition}/${x.offset}`)).size >= initialCount
  }, 30000, `${GROUP}: all ${initialCount} initial messages consumed by a and b`)

  // New messages reach only the owner of their partition.
  {
    const own = owner([a, b])
    const sent = [...(await sendTo(0, 4, 'ab')), ...(await sendTo(1, 4, 'ab'))]
    const seen = m => x => x.value === m.value && x.partition === m.partition
    await waitFor(() => {
      checkNoCrash(MEMBERS)
      return sent.every(m => own[m.partition].msgs.some(seen(m)))
    }, 20000, 'messages sent after a/b settled to reach their partition owner')
    await sleep(1000)
    for (const m of sent) {
      const other = own[m.partition] === a ? b : a
      check(!other.msgs.some(seen(m)),
        `message for partition ${m.partition} (owned by ${own[m.partition].name}) was also delivered to ${other.name}`)
    }
    log(`ok: 8 new messages each delivered only to the owner of its partition (0 -> ${own[0].name}, 1 -> ${own[1].name})`)
  }

  // ---- a third member joins: rebalance with a new generation on a and b.
  const joinsBefore = { a: a.joins.length, b: b.joins.length }
  const c = new Member('member-c', GROUP)
  MEMBERS.push(c)
  const gen2 = await waitFor(() => {
    checkNoCrash(MEMBERS)
    return settled([a, b, c], gen1 + 1)
  }, 45000, 'members a, b, c to settle in a generation after ' + gen1, 100)
  log(`a, b, c settled in generation ${gen2}`)
  check(gen2 > gen1, `generation after c joined (${gen2}) must be greater than ${gen1}`)
  check(a.joins.length > joinsBefore.a && b.joins.length > joinsBefore.b,
    `existing members must see GROUP_JOIN again after c joined (a: ${joinsBefore.a} -> ${a.joins.length}, b: ${joinsBefore.b} -> ${b.joins.length})`)
  checkEq([gen2, gen2], [a.lastJoin.generationId, b.lastJoin.generationId], 'a and b observed GROUP_JOIN with the new generation')
  {
    const sizes = [a, b, c].map(m => m.lastJoin.assignment.length).sort()
    checkEq([0, 1, 1], sizes, 'three members over two partitions: assignment sizes')
    const { groups } = await admin.describeGroups([GROUP])
    checkEq(['Stable', 3], [groups[0].state, groups[0].members.length], `describeGroups(${GROUP}) with a, b, c: [state, #members]`)
  }

  // ---- SIGKILL a member that holds a partition.
  const victim = [c, a, b].find(m => m.lastJoin.assignment.length > 0)
  const survivors = [a, b, c].filter(m => m !== victim)
  const victimParts = victim.lastJoin.assignment.slice()
  log(`killing ${victim.name} (pid ${victim.proc.pid}, member ${victim.lastJoin.memberId}) holding partitions ${stable(victimParts)} with SIGKILL`)
  const killedAt = Date.now()
  victim.kill('SIGKILL')
  await waitFor(() => victim.exited, 5000, `${victim.name} to exit`)
  checkEq('SIGKILL', victim.exited.signal, `${victim.name} died of SIGKILL`)
  MEMBERS.splice(MEMBERS.indexOf(victim), 1)
  const markers = []
  for (const p of victimParts) markers.push(...(await sendTo(p, 3, 'after-kill')))
  const deadlineMs = SESSION_TIMEOUT + KILL_MARGIN_MS
  const seenBy = m => survivors.find(s => s.msgs.some(x => x.value === m.value && x.partition === m.partition))
  try {
    await waitFor(() => {
      checkNoCrash(survivors)
      return markers.every(m => seenBy(m))
    }, deadlineMs - (Date.now() - killedAt), 'markers')
  } catch (e) {
    if (!(e instanceof TestFailure)) throw e
    const missing = markers.filter(m => !seenBy(m)).map(m => `${m.partition}/${m.offset}`)
    const lastJoins = survivors.map(s => `${s.name}: gen ${s.lastJoin.generationId} ${stable(s.lastJoin.assignment)}`)
    throw new TestFailure(`after SIGKILL of ${victim.name}, messages ${stable(missing)} sent to its partitions ` +
      `${stable(victimParts)} were not consumed by a survivor within sessionTimeout ${SESSION_TIMEOUT}ms + ` +
      `${KILL_MARGIN_MS}ms (survivors' last GROUP_JOIN: ${lastJoins.join('; ')}; ${e.message})`)
  }
  const tookMs = Date.now() - killedAt
  log(`ok: messages sent to ${victim.name}'s partitions ${stable(victimParts)} consumed by ` +
    `${[...new Set(markers.map(m => seenBy(m).name))].join(', ')} ${tookMs}ms after the kill ` +
    `(sessionTimeout ${SESSION_TIMEOUT}ms)`)
  const gen3 = await waitFor(() => settled(survivors, gen2 + 1), 10000, 'survivors to settle in a generation after ' + gen2)
  checkEq([1, 1], survivors.map(m => m.lastJoin.assignment.length), 'after the kill: each survivor owns one partition')
  log(`survivors settled in generation ${gen3}`)
  {
    const { groups } = await admin.describeGroups([GROUP])
    const g = groups[0]
    checkEq(['Stable', 2], [g.state, g.members.length], `describeGroups(${GROUP}) after the kill: [state, #members]`)
    checkEq(survivors.map(m => m.lastJoin.memberId).sort(), g.members.map(m => m.memberId).sort(),
      `describeGroups(${GROUP}) after the kill: member ids are the survivors`)
  }
  // Committed offsets catch up with everything produced.
  {
    const want = endOffsets()
    let last
    try {
      await waitFor(async () => {
        last = await committed(GROUP)
        return stable(last) === stable(want)
      }, 15000, `committed offsets of ${GROUP}`, 300)
    } catch (e) {
      throw new TestFailure(`admin.fetchOffsets(${GROUP}): expected ${stable(want)}, last got ${stable(last)}`)
    }
    checkEq(want, last, `admin.fetchOffsets(${GROUP}) equals the end offsets`)
    const hi = await admin.fetchTopicOffsets(TOPIC)
    checkEq(want, Object.fromEntries(hi.map(h => [h.partition, Number(h.high)])), `admin.fetchTopicOffsets(${TOPIC}) high watermarks`)
  }
  // Every message produced was consumed by some member of the group.
  {
    const all = new Set(MEMBERS.concat([victim]).flatMap(m => m.msgs.map(x => `${x.partition}/${x.offset}/${x.value}`)))
    const missing = [0, 1].flatMap(p => expected[p].filter(e => !all.has(`${p}/${e.offset}/${e.value}`)).map(e => `${p}/${e.offset}`))
    checkEq([], missing, `${GROUP}: messages never consumed by any member`)
  }
  // Clean leave of the survivors.
  for (const m of survivors) m.proc.send({ type: 'stop' })
  await waitFor(() => survivors.every(m => m.exited), 20000, 'survivors to disconnect and exit')
  checkEq([true, true], survivors.map(m => m.stopped), 'survivors disconnected cleanly')
  {
    const { groups } = await admin.describeGroups([GROUP])
    checkEq(['Empty', 0], [groups[0].state, groups[0].members.length], `describeGroups(${GROUP}) after all left: [state, #members]`)
    const listed = (await admin.listGroups()).groups.map(g => g.groupId).sort()
    checkEq([GROUP, ...groupNames].sort(), listed, 'listGroups lists the three groups')
  }
  await producer.disconnect()
  await admin.disconnect()
}

function killMembers() {
  for (const m of MEMBERS) {
    try {
      m.kill('SIGKILL')
    } catch (e) {}
  }
}

if (process.argv[2] === 'member') {
  runMember(process.argv[3], process.argv[4]).catch(e => {
    process.stderr.write(`[${process.argv[3]}] member failed: ${e && e.stack ? e.stack : e}\n`)
    process.exit(2)
  })
} else if (!process.env.BOOTSTRAP) {
  // No broker given: run this script under with_broker.sh (fresh broker).
  const r = spawnSync('bash', [path.join(HERE, 'with_broker.sh'), ...BROKER_ARGS, '--',
    process.execPath, __filename, ...process.argv.slice(2)], { stdio: 'inherit' })
  process.exit(r.status == null ? 1 : r.status)
} else {
  const timer = setTimeout(() => {
    process.stderr.write(`${NAME}: FAIL: timed out after ${OVERALL_TIMEOUT_MS}ms\n`)
    killMembers()
    process.exit(1)
  }, OVERALL_TIMEOUT_MS)
  main().then(() => {
    clearTimeout(timer)
    killMembers()
    process.stdout.write(`${NAME}: PASS\n`)
    process.exit(0)
  }, e => {
    clearTimeout(timer)
    killMembers()
    if (e instanceof TestFailure) {
      process.stderr.write(`${NAME}: FAIL: ${e.message}\n`)
    } else {
      process.stderr.write(`${e && e.stack ? e.stack : e}\n${NAME}: FAIL: unexpected exception (see above)\n`)
    }
    process.exit(1)
  })
}
