"""The Lua scripts through which the leader touches the consumer group, each fenced by the lease.

Each first checks that ``KEYS[1]`` (the lease) holds ``ARGV[1]`` (our token) and returns ``-1``
when it does not. Redis runs no blocking command in a script: the service waits with a plain
``XREAD BLOCK`` and then reads fenced.
"""

from __future__ import annotations

# Helpers shared by the scripts: stream ids compared as (ms, seq) numbers.
_IDS = """
local function split(id)
    local dash = string.find(id, '-', 1, true)
    if not dash then return tonumber(id), 0 end
    return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function older(a, b)
    local ams, aseq = split(a)
    local bms, bseq = split(b)
    return ams < bms or (ams == bms and aseq < bseq)
end
local function ack(stream, group, ids, first)
    for i = first, #ids, 1000 do
        redis.call('XACK', stream, group, unpack(ids, i, math.min(i + 999, #ids)))
    end
end
"""

# KEYS: lease, stream. ARGV: token, group, consumer, count, ids to acknowledge...
# Returns -1 (not the leader), {1, entries} or, when nothing is new, {0, id to wait after}.
READ_LUA = (
    _IDS
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
ack(KEYS[2], ARGV[2], ARGV, 5)
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                         'STREAMS', KEYS[2], '>')
if reply then return {1, reply[1][2]} end
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if top[1] then return {0, top[1][1]} end
return {0, '0-0'}
"""
)

# KEYS: lease, stream. ARGV: token, group, consumer, start (exclusive unless '-'), count.
# Claims pending entries of any consumer for ours. An entry deleted from the stream while
# pending comes back as nil from XCLAIM on Redis 6.2 (7.0 leaves it out and drops it from the
# pending list): either way it is acknowledged here, so it never blocks recovery.
# Returns -1 or {next start or '', entries, ids of deleted entries}.
CLAIM_LUA = (
    _IDS
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local count = tonumber(ARGV[5])
local pending = redis.call('XPENDING', KEYS[2], ARGV[2], ARGV[4], '+', count)
if #pending == 0 then return {'', {}, {}} end
local ids = {}
for i, p in ipairs(pending) do ids[i] = p[1] end
local claimed = redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, unpack(ids))
local present, entries = {}, {}
for _, entry in ipairs(claimed) do
    if entry then
        present[entry[1]] = true
        entries[#entries + 1] = entry
    end
end
local gone = {}
for _, id in ipairs(ids) do
    if not present[id] then gone[#gone + 1] = id end
end
ack(KEYS[2], ARGV[2], gone, 1)
local next_start = ''
if #pending == count then next_start = '(' .. ids[#ids] end
return {next_start, entries, gone}
"""
)

# KEYS: lease, stream. ARGV: token, group, our consumer, oldest id still needed for the window,
# idle ms after which a consumer with nothing pending is removed.
# Trims (MINID ~) below the oldest of: the window's start, the oldest pending entry, the
# group's last-delivered id (nothing unread is ever trimmed). Removes other consumers that
# hold nothing pending (atomically checked: removing one with pending entries would lose them).
# Returns -1 or {entries trimmed, {removed consumer names}}.
HOUSEKEEPING_LUA = (
    _IDS
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return {0, {}} end
local keep = ARGV[4]
local summary = redis.call('XPENDING', KEYS[2], ARGV[2])
if summary[2] and older(summary[2], keep) then keep = summary[2] end
for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
    local fields = {}
    for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
    if fields['name'] == ARGV[2] and older(fields['last-delivered-id'], keep) then
        keep = fields['last-delivered-id']
    end
end
local trimmed = redis.call('XTRIM', KEYS[2], 'MINID', '~', keep)
local removed = {}
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[2], ARGV[2])) do
    local fields = {}
    for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
    if fields['name'] ~= ARGV[3] and fields['pending'] == 0
            and fields['idle'] >= tonumber(ARGV[5]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[2], fields['name'])
        removed[#removed + 1] = fields['name']
    end
end
return {trimmed, removed}
"""
)

# KEYS: stream. ARGV: after (exclusive), until (inclusive), entries to scan.
# History compacted on the server, for the part of the window a new leader has no time to
# replay in full: every ``counter`` entry (the status rules and totals need each one), the
# last entry of every other kind (latest values), and the last ``tick`` before the last
# ``interrupt`` (its age is counted in ticks). Read-only, so not fenced.
# Returns {last id scanned or '', entries in id order}.
COMPACT_HISTORY_LUA = """
local batch = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], ARGV[2], 'COUNT', ARGV[3])
if #batch == 0 then return {'', {}} end
local keep, last_of, tick_before_interrupt, last_tick = {}, {}, nil, nil
for i, entry in ipairs(batch) do
    local kind = nil
    local fields = entry[2]
    for j = 1, #fields, 2 do
        if fields[j] == 'kind' then kind = fields[j + 1] break end
    end
    if kind == 'counter' then
        keep[i] = true
    elseif kind ~= nil then
        if kind == 'interrupt' then tick_before_interrupt = last_tick end
        if kind == 'tick' then last_tick = i end
        last_of[kind] = i
    end
end
for _, i in pairs(last_of) do keep[i] = true end
if tick_before_interrupt then keep[tick_before_interrupt] = true end
local out = {}
for i, entry in ipairs(batch) do
    if keep[i] then out[#out + 1] = entry end
end
return {batch[#batch][1], out}
"""
