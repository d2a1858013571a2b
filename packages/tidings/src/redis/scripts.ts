/**
 * The Lua scripts: every multi-key step runs server-side and atomically, so concurrent transports (in other
 * processes) never see half of it. Key names follow `keys.ts`; scripts build them from the prefix and the encoded
 * names they are given (a standalone or Sentinel-managed Redis allows that; Redis Cluster does not, see the docs).
 *
 * Stream entries have the fields `_o` (offset, always first), `_k` (key), `_t` (timestamp ms, only when it is not the
 * id's time), one field per header (a header name starting with `_` gets a second `_`), and `_v` (value, last). Entry
 * ids are `<ms>-<seq>` where `ms` is the running maximum of the records' timestamps in the partition, so ids order by
 * offset and by time at once.
 *
 * Fencing: every script a member runs on behalf of a partition it owns (redeliver, replay, take back, ack, nack delay,
 * release) first checks that the owner key still holds `<member>|<epoch>`; a member that lost the partition changes
 * nothing. (Reads of new records are plain commands; see `member.ts` for how they are checked.)
 */
import { createHash } from 'node:crypto';

export interface Script {
  readonly name: string;
  readonly source: string;
  readonly sha: string;
}

function script(name: string, body: string): Script {
  const source = `${lib}\n${body}`;
  return { name, source, sha: createHash('sha1').update(source).digest('hex') };
}

/** Helpers shared by the scripts. */
const lib = `
local MAXSEQ = '18446744073709551615'
local function fmt(n) return string.format('%.0f', n) end
local function idMs(id) return tonumber(string.sub(id, 1, string.find(id, '-', 1, true) - 1)) end
local function successor(id)
  local d = string.find(id, '-', 1, true)
  return string.sub(id, 1, d - 1) .. '-' .. fmt(tonumber(string.sub(id, d + 1)) + 1)
end
local function predecessor(id)
  local d = string.find(id, '-', 1, true)
  local ms, seq = tonumber(string.sub(id, 1, d - 1)), string.sub(id, d + 1)
  if seq ~= '0' then return fmt(ms) .. '-' .. fmt(tonumber(seq) - 1) end
  if ms > 0 then return fmt(ms - 1) .. '-' .. MAXSEQ end
  return '0-0'
end
local function fieldsMap(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
-- Bytes of a stored record as maxRecordBytes counts them: key, value, header names and values.
local function entrySize(f)
  local size = 0
  for i = 1, #f, 2 do
    local name = f[i]
    if name == '_k' or name == '_v' then size = size + #f[i + 1]
    elseif name == '_o' or name == '_t' then size = size
    elseif string.sub(name, 1, 1) == '_' then size = size + #name - 1 + #f[i + 1]
    else size = size + #name + #f[i + 1] end
  end
  return size
end
local function groupInfo(stream, g)
  local r = redis.pcall('XINFO', 'GROUPS', stream)
  if type(r) ~= 'table' or r.err then return nil end
  for _, grp in ipairs(r) do
    local m = fieldsMap(grp)
    if m['name'] == g then return m end
  end
  return nil
end
-- low offset, high offset (next to assign), last id ms of a partition
local function bounds(nextKey, p)
  local st = redis.call('HMGET', nextKey, 'l' .. p, 'o' .. p, 't' .. p)
  return tonumber(st[1]) or 0, tonumber(st[2]) or 0, tonumber(st[3]) or 0
end
-- The id of the first entry at or after offset o (low <= o < high), through the sparse index; nil if none.
local function idOfOffset(stream, idx, low, o)
  local start, startOff = '-', low
  local z = redis.call('ZREVRANGEBYSCORE', idx, o, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if z[1] then
    local off = tonumber(z[2])
    if off >= low then start = z[1]; startOff = off end
  end
  local es = redis.call('XRANGE', stream, start, '+', 'COUNT', o - startOff + 1)
  for i = 1, #es do
    if tonumber(es[i][2][2]) >= o then return es[i][1] end
  end
  return nil
end
-- The last-delivered id a group must have to read next from position pos ({k = kind, v = value}).
local function startId(stream, idx, nextKey, p, pos)
  if pos.k == 'earliest' then return '0-0' end
  if pos.k == 'latest' then return '$' end
  local low, high, lastMs = bounds(nextKey, p)
  if pos.k == 'timestamp' then
    local ms = math.ceil(pos.v)
    if ms <= 0 then return '0-0' end
    if ms > lastMs then return '$' end
    return fmt(ms - 1) .. '-' .. MAXSEQ
  end
  if pos.v <= low then return '0-0' end
  if pos.v >= high then return '$' end
  local id = idOfOffset(stream, idx, low, pos.v)
  if not id then return '$' end
  return predecessor(id)
end
local function ensureGroup(stream, idx, nextKey, p, g, pos)
  if groupInfo(stream, g) then return false end
  redis.call('XGROUP', 'CREATE', stream, g, startId(stream, idx, nextKey, p, pos), 'MKSTREAM')
  return true
end
-- Retention: removes the oldest entries older than retMs (by id time) and while the partition holds more than
-- retBytes; keeps the low offset, the bytes held and the index in step. Returns the number removed.
local function trim(stream, idx, nextKey, p, now, retMs, retBytes)
  if not retMs and not retBytes then return 0 end
  local removed, freed = 0, 0
  if retMs then
    local threshold = fmt(now - retMs)
    if retBytes then
      local from = '-'
      while true do
        local es = redis.call('XRANGE', stream, from, '(' .. threshold .. '-0', 'COUNT', 100)
        for i = 1, #es do freed = freed + entrySize(es[i][2]) end
        removed = removed + #es
        if #es < 100 then break end
        from = '(' .. es[#es][1]
      end
      if removed > 0 then redis.call('XTRIM', stream, 'MINID', threshold) end
    else
      removed = redis.call('XTRIM', stream, 'MINID', threshold)
    end
  end
  if retBytes then
    local held = (tonumber(redis.call('HGET', nextKey, 'b' .. p)) or 0) - freed
    local over = held > retBytes
    if over then
      local from, lastRemoved, n = '-', nil, 0
      while held > retBytes do
        local es = redis.call('XRANGE', stream, from, '+', 'COUNT', 100)
        if #es == 0 then held = 0; break end
        for i = 1, #es do
          if held <= retBytes then break end
          held = held - entrySize(es[i][2])
          n = n + 1
          lastRemoved = es[i][1]
        end
        from = '(' .. es[#es][1]
      end
      if n > 0 then
        redis.call('XTRIM', stream, 'MINID', successor(lastRemoved))
        removed = removed + n
      end
    end
    if freed > 0 or over then redis.call('HSET', nextKey, 'b' .. p, fmt(math.max(held, 0))) end
  end
  if removed > 0 then
    local low = (tonumber(redis.call('HGET', nextKey, 'l' .. p)) or 0) + removed
    redis.call('HSET', nextKey, 'l' .. p, fmt(low))
    redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. fmt(low))
  end
  return removed
end
local function retention(meta)
  if not meta then return nil, nil end
  local c = cjson.decode(meta)
  return c.retentionMs, c.retentionBytes
end
`;

/**
 * Appends records to partitions of one topic. KEYS[1] `#next:<t>`, then per partition its stream and index.
 * ARGV: now, retentionMs or '', retentionBytes or '', then per partition: partition, count, then per record:
 * timestamp, key, size, header count, header (name, value) pairs, value. Returns the first offset per partition.
 */
export const publishScript = script(
  'publish',
  `
local nextKey = KEYS[1]
local now = tonumber(ARGV[1])
local retMs, retBytes = tonumber(ARGV[2]), tonumber(ARGV[3])
local a = 4
local firsts = {}
for g = 1, (#KEYS - 1) / 2 do
  local stream, idx = KEYS[2 * g], KEYS[2 * g + 1]
  local p, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local st = redis.call('HMGET', nextKey, 'o' .. p, 't' .. p, 'b' .. p)
  local off, lastMs, bytes = tonumber(st[1]) or 0, tonumber(st[2]) or 0, tonumber(st[3]) or 0
  firsts[g] = off
  for r = 1, n do
    local ts, key, size, nh = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    a = a + 4
    local tsn = tonumber(ts)
    local ms = math.floor(tsn)
    if ms > lastMs then lastMs = ms end
    local args = { 'XADD', stream, fmt(lastMs) .. '-*', '_o', fmt(off), '_k', key }
    -- The timestamp is the id's time unless the producer's clock went back (or it has a fraction of a ms).
    if tsn ~= lastMs then
      args[8] = '_t'
      args[9] = ts
    end
    for h = 1, 2 * nh do
      args[#args + 1] = ARGV[a]
      a = a + 1
    end
    args[#args + 1] = '_v'
    args[#args + 1] = ARGV[a]
    a = a + 1
    local id = redis.pcall(unpack(args))
    if type(id) == 'table' then
      -- The stream's top id is ahead of the recorded one (entries added by someone else): let Redis pick.
      if args[8] ~= '_t' then
        table.insert(args, 8, '_t')
        table.insert(args, 9, ts)
      end
      args[3] = '*'
      id = redis.call(unpack(args))
      lastMs = idMs(id)
    end
    if off % 32 == 0 then redis.call('ZADD', idx, off, id) end
    off = off + 1
    bytes = bytes + size
  end
  redis.call('HSET', nextKey, 'o' .. p, fmt(off), 't' .. p, fmt(lastMs), 'b' .. p, fmt(bytes))
  trim(stream, idx, nextKey, p, now, retMs, retBytes)
end
return firsts
`,
);

/** Creates a topic unless it exists. ARGV: topics hash, name, config JSON. Returns the stored config JSON. */
export const ensureTopicScript = script(
  'ensureTopic',
  `
local meta = redis.call('HGET', ARGV[1], ARGV[2])
if meta then return meta end
redis.call('HSET', ARGV[1], ARGV[2], ARGV[3])
return ARGV[3]
`,
);

/**
 * A member's join and heartbeat: renews (or writes) its lease and member row, evicts members reported dead, drops
 * members whose lease passed, computes the assignment (per topic, partition p goes to the (p mod n)-th live member
 * subscribed to it, in join order), renews the owner keys it holds, and claims the partitions assigned to it that
 * are free (no owner key, or the owner is not live). A claim bumps the epoch, sets the owner key, moves every pending
 * entry of the group in that partition to this member (XAUTOCLAIM, JUSTID: delivery counts unchanged) and removes the
 * other consumers. On join it also creates the group in every partition of its topics at its start position.
 * ARGV[1]: JSON { prefix, group, eg, me, leaseMs, join, info, start, defaultPartitions, topics: [{t, et}],
 * owned: {"<et>:<p>": epoch}, dead: [member] }. Returns JSON (see `member.ts`).
 */
export const syncScript = script(
  'sync',
  `
local a = cjson.decode(ARGV[1])
local P, g, eg, me, leaseMs = a.prefix, a.group, a.eg, a.me, a.leaseMs
local membersKey, infoKey = P .. '#members:' .. eg, P .. '#info:' .. eg
local function leaseKey(id) return P .. '#lease:' .. eg .. ':' .. id end
local changed = false
for _, d in ipairs(a.dead) do
  if d ~= me and redis.call('DEL', leaseKey(d)) == 1 then changed = true end
end
local rejoined = false
local mine = leaseKey(me)
if redis.call('EXISTS', mine) == 0 then
  if not a.join then rejoined = true end
  redis.call('ZREM', membersKey, me)
  redis.call('ZADD', membersKey, redis.call('INCR', P .. '#seq'), me)
  redis.call('HSET', infoKey, me, a.info)
  redis.call('SADD', P .. '#groups', g)
  changed = true
end
redis.call('SET', mine, '1', 'PX', leaseMs)

local counts = {}
for i, tp in ipairs(a.topics) do
  local meta = redis.call('HGET', P .. '#topics', tp.t)
  if not meta then
    meta = cjson.encode({ partitions = a.defaultPartitions })
    redis.call('HSET', P .. '#topics', tp.t, meta)
  end
  local n = cjson.decode(meta).partitions
  counts[i] = n
  if a.join then
    redis.call('HSET', P .. '#gtopics:' .. eg, tp.t, tp.et)
    for p = 0, n - 1 do
      ensureGroup(P .. ':' .. tp.t .. ':' .. p, P .. '#idx:' .. tp.et .. ':' .. p, P .. '#next:' .. tp.et, p, g, a.start)
    end
  end
end

local ids = redis.call('ZRANGE', membersKey, 0, -1)
local live = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', leaseKey(id)) == 1 then
    live[#live + 1] = id
  else
    redis.call('ZREM', membersKey, id)
    redis.call('HDEL', infoKey, id)
    changed = true
  end
end
local liveSet, members, topicSets = {}, {}, {}
if #live > 0 then
  local vals = redis.call('HMGET', infoKey, unpack(live))
  for i, id in ipairs(live) do
    liveSet[id] = true
    local info = vals[i] and cjson.decode(vals[i]) or { topics = {} }
    members[i] = { id, vals[i] or '{}' }
    local set = {}
    for _, t in ipairs(info.topics) do set[t] = true end
    topicSets[id] = set
  end
end

local function claim(t, et, p, ownerKey)
  local epoch = redis.call('HINCRBY', P .. '#epoch:' .. eg, et .. ':' .. p, 1)
  redis.call('SET', ownerKey, me .. '|' .. epoch, 'PX', leaseMs)
  local stream = P .. ':' .. t .. ':' .. p
  ensureGroup(stream, P .. '#idx:' .. et .. ':' .. p, P .. '#next:' .. et, p, g, a.start)
  local cursor = '0-0'
  repeat
    local r = redis.call('XAUTOCLAIM', stream, g, me, 0, cursor, 'COUNT', 1000, 'JUSTID')
    cursor = r[1]
  until cursor == '0-0'
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, g)) do
    local name = fieldsMap(c)['name']
    if name ~= me then redis.call('XGROUP', 'DELCONSUMER', stream, g, name) end
  end
  local info = groupInfo(stream, g)
  local delayKey = P .. '#delay:' .. eg .. ':' .. et .. ':' .. p
  local delays = {}
  local stored = redis.call('HGETALL', delayKey)
  for i = 1, #stored, 2 do
    -- A delay outlives its entry only if the entry left the pending list another way (retention): forget it.
    if #redis.call('XPENDING', stream, g, stored[i], stored[i], 1) > 0 then
      delays[#delays + 1] = stored[i]
      delays[#delays + 1] = stored[i + 1]
    else
      redis.call('HDEL', delayKey, stored[i])
    end
  end
  return epoch, info['last-delivered-id'], tonumber(info['pending']), delays
end

local parts, targets = {}, {}
for i, tp in ipairs(a.topics) do
  local subs = {}
  for _, id in ipairs(live) do
    if topicSets[id][tp.t] then subs[#subs + 1] = id end
  end
  for p = 0, counts[i] - 1 do
    local target = #subs > 0 and subs[(p % #subs) + 1] == me
    if target then targets[#targets + 1] = { tp.t, p } end
    local ownerKey = P .. '#owner:' .. eg .. ':' .. tp.et .. ':' .. p
    local localEpoch = a.owned[tp.et .. ':' .. p]
    local owner = redis.call('GET', ownerKey)
    local part = { t = tp.t, p = p, state = 'free', epoch = 0 }
    if owner then
      local sep = string.find(owner, '|', 1, true)
      local om, oe = string.sub(owner, 1, sep - 1), tonumber(string.sub(owner, sep + 1))
      if om == me and localEpoch == oe then
        redis.call('PEXPIRE', ownerKey, leaseMs)
        part.epoch = oe
        if target then part.state = 'own' else part.state = 'handover' end
      elseif om == me or not liveSet[om] then
        redis.call('DEL', ownerKey)
        changed = true
        owner = false
      else
        part.state = 'other'
      end
    end
    if not owner and target then
      local epoch, lastId, pending, delays = claim(tp.t, tp.et, p, ownerKey)
      part.state, part.epoch, part.lastId, part.pending, part.delays = 'claimed', epoch, lastId, pending, delays
      changed = true
    end
    parts[#parts + 1] = part
  end
end
if changed then redis.call('PUBLISH', P .. '#changed:' .. eg, me) end
return cjson.encode({ rejoined = rejoined, members = members, targets = targets, parts = parts })
`,
);

/**
 * Releases partitions (fenced) and, with `leave`, removes the member. Entries read but never handed out get their
 * delivery count set back (`XCLAIM ... RETRYCOUNT`), so the next owner counts their next delivery right.
 * ARGV[1]: JSON { prefix, group, eg, me, leave, parts: [{ t, et, p, epoch, unhanded: [[id, count]] }] }.
 */
export const releaseScript = script(
  'release',
  `
local a = cjson.decode(ARGV[1])
local P, g, eg, me = a.prefix, a.group, a.eg, a.me
local changed = false
for _, part in ipairs(a.parts) do
  local ownerKey = P .. '#owner:' .. eg .. ':' .. part.et .. ':' .. part.p
  if redis.call('GET', ownerKey) == me .. '|' .. fmt(part.epoch) then
    local stream = P .. ':' .. part.t .. ':' .. part.p
    for _, u in ipairs(part.unhanded) do
      redis.pcall('XCLAIM', stream, g, me, 0, u[1], 'RETRYCOUNT', u[2], 'JUSTID')
    end
    redis.call('DEL', ownerKey)
    local mine = redis.pcall('XPENDING', stream, g, '-', '+', 1, me)
    if type(mine) == 'table' and not mine.err and #mine == 0 then
      redis.pcall('XGROUP', 'DELCONSUMER', stream, g, me)
    end
    changed = true
  end
end
if a.leave then
  redis.call('ZREM', P .. '#members:' .. eg, me)
  redis.call('HDEL', P .. '#info:' .. eg, me)
  redis.call('DEL', P .. '#lease:' .. eg .. ':' .. me)
  changed = true
end
if changed then redis.call('PUBLISH', P .. '#changed:' .. eg, me) end
return changed and 1 or 0
`,
);

/**
 * Takes back, for the partition's owner (fenced), every entry pending at another consumer of the group in this
 * stream (a stale member that read after losing the partition), and removes those consumers. ARGV: owner key,
 * expected, stream, group, member. Returns 1, or 0 when fenced.
 */
export const takeBackScript = script(
  'takeBack',
  `
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return 0 end
local cursor = '0-0'
repeat
  local r = redis.call('XAUTOCLAIM', ARGV[3], ARGV[4], ARGV[5], 0, cursor, 'COUNT', 1000, 'JUSTID')
  cursor = r[1]
until cursor == '0-0'
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', ARGV[3], ARGV[4])) do
  local name = fieldsMap(c)['name']
  if name ~= ARGV[5] then redis.call('XGROUP', 'DELCONSUMER', ARGV[3], ARGV[4], name) end
end
return 1
`,
);

/**
 * A page of this member's pending entries (fenced XPENDING), for replay after a claim. ARGV: owner key, expected,
 * stream, group, member, start ('-' or '(<id>'), count. Returns nil when fenced, else [id, delivery count]*.
 */
export const pendingScript = script(
  'pending',
  `
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return false end
local r = redis.call('XPENDING', ARGV[3], ARGV[4], ARGV[6], '+', ARGV[7], ARGV[5])
local out = {}
for _, e in ipairs(r) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[4]
end
return out
`,
);

/**
 * Redelivers pending entries to this member (fenced XCLAIM, which adds one to each delivery count). Entries removed
 * by retention are dropped from the pending list by Redis and left out. ARGV: owner key, expected, stream, group,
 * member, ids. Returns nil when fenced, else the entries.
 */
export const claimScript = script(
  'claim',
  `
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return false end
local out = {}
for i = 6, #ARGV do
  local e = redis.call('XCLAIM', ARGV[3], ARGV[4], ARGV[5], 0, ARGV[i])
  if e[1] then out[#out + 1] = e[1] end
end
return out
`,
);

/**
 * Acknowledges entries (fenced XACK) and forgets their nack delays. ARGV: group, then per partition: owner key,
 * expected, stream, delay key, count, ids. Returns the streams whose acks were fenced.
 */
export const ackScript = script(
  'ack',
  `
local g = ARGV[1]
local fenced = {}
local i = 2
while i <= #ARGV do
  local ownerKey, expected, stream, delayKey = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local first, last = i + 5, i + 4 + tonumber(ARGV[i + 4])
  if redis.call('GET', ownerKey) == expected then
    redis.call('XACK', stream, g, unpack(ARGV, first, last))
    if redis.call('EXISTS', delayKey) == 1 then redis.call('HDEL', delayKey, unpack(ARGV, first, last)) end
  else
    fenced[#fenced + 1] = stream
  end
  i = last + 1
end
return fenced
`,
);

/** Records a nack's due time for the next owner (fenced). ARGV: owner key, expected, delay key, id, due ms. */
export const nackDelayScript = script(
  'nackDelay',
  `
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', ARGV[3], ARGV[4], ARGV[5])
return 1
`,
);

/** Retention, then low and high offset of every partition. ARGV: prefix, topic, encoded topic, now. */
export const offsetsScript = script(
  'offsets',
  `
local P, t, et, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local meta = redis.call('HGET', P .. '#topics', t)
if not meta then return false end
local retMs, retBytes = retention(meta)
local n = cjson.decode(meta).partitions
local out = { meta }
for p = 0, n - 1 do
  local nextKey = P .. '#next:' .. et
  trim(P .. ':' .. t .. ':' .. p, P .. '#idx:' .. et .. ':' .. p, nextKey, p, now, retMs, retBytes)
  local low, high = bounds(nextKey, p)
  out[#out + 1] = low
  out[#out + 1] = high
end
return out
`,
);

/**
 * Retention, then up to `limit` entries of a partition from `from` (an offset). ARGV: prefix, topic, encoded topic,
 * partition, from, limit, now. Returns nil for an unknown topic, else the entries.
 */
export const readRangeScript = script(
  'readRange',
  `
local P, t, et, p, from, limit, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6]), tonumber(ARGV[7])
local meta = redis.call('HGET', P .. '#topics', t)
if not meta then return false end
local retMs, retBytes = retention(meta)
local stream, idx, nextKey = P .. ':' .. t .. ':' .. p, P .. '#idx:' .. et .. ':' .. p, P .. '#next:' .. et
trim(stream, idx, nextKey, p, now, retMs, retBytes)
local low, high = bounds(nextKey, p)
if from < low then from = low end
if from >= high then return {} end
local id = idOfOffset(stream, idx, low, from)
if not id then return {} end
return redis.call('XRANGE', stream, id, '+', 'COUNT', limit)
`,
);

/**
 * Retention, then the offset of the first entry whose id time (the running maximum timestamp) is at or after `ts`,
 * or the high offset. ARGV: prefix, topic, encoded topic, partition, ts, now.
 */
export const offsetForTimeScript = script(
  'offsetForTime',
  `
local P, t, et, p, ts, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local meta = redis.call('HGET', P .. '#topics', t)
if not meta then return false end
local retMs, retBytes = retention(meta)
local stream, idx, nextKey = P .. ':' .. t .. ':' .. p, P .. '#idx:' .. et .. ':' .. p, P .. '#next:' .. et
trim(stream, idx, nextKey, p, now, retMs, retBytes)
local ms = math.ceil(ts)
local start = '-'
if ms > 0 then start = fmt(ms) end
local e = redis.call('XRANGE', stream, start, '+', 'COUNT', 1)
if e[1] then return tonumber(e[1][2][2]) end
local _, high = bounds(nextKey, p)
return high
`,
);

/**
 * Members and per-partition positions of a group. ARGV[1]: JSON { prefix, group, eg, now }. Returns nil for an
 * unknown group, else JSON { members: [[id, info]], topics: [{ t, partitions, lag: [[committed, high, low]] }] }.
 * The committed offset is the group's low-water mark: the offset of its oldest pending entry, else of the first
 * entry after its last-delivered id (the high offset if none), and never below the low offset.
 */
export const describeGroupScript = script(
  'describeGroup',
  `
local a = cjson.decode(ARGV[1])
local P, g, eg, now = a.prefix, a.group, a.eg, a.now
if redis.call('SISMEMBER', P .. '#groups', g) == 0 then return false end
local members = {}
for _, id in ipairs(redis.call('ZRANGE', P .. '#members:' .. eg, 0, -1)) do
  if redis.call('EXISTS', P .. '#lease:' .. eg .. ':' .. id) == 1 then
    members[#members + 1] = { id, redis.call('HGET', P .. '#info:' .. eg, id) or '{}' }
  end
end
local topics = {}
local gtopics = redis.call('HGETALL', P .. '#gtopics:' .. eg)
for i = 1, #gtopics, 2 do
  local t, et = gtopics[i], gtopics[i + 1]
  local meta = redis.call('HGET', P .. '#topics', t)
  if meta then
    local retMs, retBytes = retention(meta)
    local n = cjson.decode(meta).partitions
    local lag = {}
    for p = 0, n - 1 do
      local stream, idx, nextKey = P .. ':' .. t .. ':' .. p, P .. '#idx:' .. et .. ':' .. p, P .. '#next:' .. et
      trim(stream, idx, nextKey, p, now, retMs, retBytes)
      local low, high = bounds(nextKey, p)
      local c = low
      local info = groupInfo(stream, g)
      if info then
        c = high
        local after = redis.call('XRANGE', stream, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
        if after[1] then c = tonumber(after[1][2][2]) end
        if tonumber(info['pending']) > 0 then
          local s = redis.call('XPENDING', stream, g)
          local e = redis.call('XRANGE', stream, s[2], '+', 'COUNT', 1)
          if e[1] then c = math.min(c, tonumber(e[1][2][2])) end
        end
        if c < low then c = low end
      end
      lag[#lag + 1] = { c, high, low }
    end
    topics[#topics + 1] = { t = t, partitions = n, lag = lag }
  end
end
return cjson.encode({ members = members, topics = topics })
`,
);

/**
 * Moves a group's position in every partition of a topic, refused while a member of the group is live: the group is
 * recreated at the position (dropping its pending entries and consumers), nack delays and owner keys are cleared and
 * the epochs bumped. ARGV[1]: JSON { prefix, group, eg, t, et, partitions, pos }. Returns the number of live
 * members (0: done).
 */
export const resetScript = script(
  'reset',
  `
local a = cjson.decode(ARGV[1])
local P, g, eg, t, et = a.prefix, a.group, a.eg, a.t, a.et
local live = 0
for _, id in ipairs(redis.call('ZRANGE', P .. '#members:' .. eg, 0, -1)) do
  if redis.call('EXISTS', P .. '#lease:' .. eg .. ':' .. id) == 1 then live = live + 1 end
end
if live > 0 then return live end
redis.call('SADD', P .. '#groups', g)
redis.call('HSET', P .. '#gtopics:' .. eg, t, et)
for p = 0, a.partitions - 1 do
  local stream, idx, nextKey = P .. ':' .. t .. ':' .. p, P .. '#idx:' .. et .. ':' .. p, P .. '#next:' .. et
  local id = startId(stream, idx, nextKey, p, a.pos)
  redis.pcall('XGROUP', 'DESTROY', stream, g)
  redis.call('XGROUP', 'CREATE', stream, g, id, 'MKSTREAM')
  redis.call('DEL', P .. '#delay:' .. eg .. ':' .. et .. ':' .. p, P .. '#owner:' .. eg .. ':' .. et .. ':' .. p)
  redis.call('HINCRBY', P .. '#epoch:' .. eg, et .. ':' .. p, 1)
end
return 0
`,
);

export const allScripts: readonly Script[] = [
  publishScript,
  ensureTopicScript,
  syncScript,
  releaseScript,
  takeBackScript,
  pendingScript,
  claimScript,
  ackScript,
  nackDelayScript,
  offsetsScript,
  readRangeScript,
  offsetForTimeScript,
  describeGroupScript,
  resetScript,
];
