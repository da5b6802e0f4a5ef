//! The three Lua scripts behind [`crate::RedisStore`], and why they look the way they do.
//!
//! # Data layout
//!
//! One rate-limit key (say `openai`) owns two Redis hashes:
//!
//! - `{prefix}:{openai}:req` — the requests/min bucket,
//! - `{prefix}:{openai}:tok` — the tokens/min bucket,
//!
//! each with two fields: `level` (what is available, a float that may be negative after a
//! reconciliation debit) and `ts` (the Redis server time of the last update, in microseconds).
//! The braces are a Redis Cluster *hash tag*: only the text between the first `{` and the next
//! `}` is hashed, so both hashes of a pair always land in the same slot and one script may touch
//! both. (Both names are identical up to the `:req`/`:tok` suffix, so that holds even when the
//! prefix or the key contain braces themselves.) A missing hash means a full bucket.
//!
//! # Why Lua, and why server time
//!
//! Several gateway replicas share these buckets. A script runs atomically on the Redis server, so
//! "refill, check both buckets, debit both or neither" is one indivisible step no matter how many
//! replicas race: there is no read-modify-write window between replicas and no lock to leak. The
//! scripts read the clock with `redis.call('TIME')`, so the replicas' own clocks (which drift and
//! jump) never enter the arithmetic; refill is `elapsed × rate`, where `elapsed` is measured
//! between two readings of the one Redis clock. A reading that went backwards (a failover to a
//! replica with a slower clock) refills nothing rather than draining the bucket.
//!
//! # Limits travel with every call
//!
//! Rates and capacities are not stored in Redis; every call passes the key's current
//! [`sluice::Limits`] as arguments. So limits learned from provider headers by one replica apply
//! as soon as that replica makes its next call, and a lowered capacity clamps the stored level on
//! the next refill (`min(capacity, level + refill)`). An axis that is unlimited is passed as
//! capacity `-1` and its hash is neither read nor written.
//!
//! # Expiry
//!
//! Every write sets `PEXPIRE` to twice the time the bucket needs to refill from its new level to
//! full (at least twice the time for a full refill from empty, and never less than one second),
//! so keys of idle models vanish on their own, and a bucket in debt is never forgotten before it
//! would have refilled anyway: an expired bucket would have been full, which is exactly what a
//! missing hash means. The expiry is capped at seven days (a rate of zero never refills).
//!
//! # Arguments and replies
//!
//! All three scripts take `KEYS[1]` = the request hash, `KEYS[2]` = the token hash, and
//! `ARGV[1..4]` = request rate per minute, request capacity, token rate per minute, token
//! capacity (capacity `-1`: unlimited axis).
//!
//! - [`acquire`]: `ARGV[5]`, `ARGV[6]` = requests and tokens asked. Replies `{1, 0}` when both
//!   buckets were debited; `{0, µs}` when nothing was taken and both buckets will hold enough
//!   after that many microseconds (the larger of the two waits, rounded up, capped at one day);
//!   `{2, 0}` or `{3, 0}` when the ask exceeds the request or token capacity and can never be
//!   granted.
//! - [`adjust`]: `ARGV[5]`, `ARGV[6]` = signed corrections for requests and tokens. A positive
//!   correction is a refund and never lifts a bucket above its capacity; a negative one is a debit
//!   and may take a bucket below zero. An axis with a zero correction is left untouched. Replies
//!   `1`.
//! - [`levels`]: read-only. Replies `{requests, tokens}`, each the current level after refill as a
//!   decimal string, or nil for an unlimited axis.

/// Shared prelude: the clock and the refill/store helpers used by all three scripts.
///
/// `load` returns the refilled level of one bucket (a missing or unreadable hash is a full
/// bucket); `save` writes a level stamped with `now` and sets the expiry described in the module
/// docs. Numbers are formatted with `string.format` on purpose: Redis converts a bare Lua number
/// argument with `%.14g`, which would round a microsecond timestamp (16 digits).
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function load(key, rate, cap)
  local v = redis.call('HMGET', key, 'level', 'ts')
  local level = tonumber(v[1])
  local ts = tonumber(v[2])
  if level == nil or ts == nil then
    return cap
  end
  local elapsed = now - ts
  if elapsed < 0 then
    elapsed = 0
  end
  return math.min(cap, level + elapsed * rate / 60000000)
end

local function save(key, level, rate, cap)
  redis.call('HSET', key, 'level', string.format('%.17g', level), 'ts', string.format('%.0f', now))
  local ttl = 604800000
  if rate > 0 then
    local missing = cap - level
    if missing < cap then
      missing = cap
    end
    ttl = math.ceil(2 * missing * 60000 / rate)
  end
  if ttl < 1000 then
    ttl = 1000
  elseif ttl > 604800000 then
    ttl = 604800000
  end
  redis.call('PEXPIRE', key, string.format('%.0f', ttl))
end

local req_rate, req_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local tok_rate, tok_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local a_req, a_tok = tonumber(ARGV[5]), tonumber(ARGV[6])
"#;

/// Take `ARGV[5]` requests and `ARGV[6]` tokens from both buckets, or neither.
///
/// Order of checks: an ask above a capacity is `TooLarge` (requests first), whatever the levels;
/// otherwise both buckets are refilled and, if either falls short, the reply is the longer of the
/// two waits and nothing is written (the refill is a pure function of the stored state and the
/// clock, so not saving it loses nothing); otherwise both are debited and saved.
const ACQUIRE_BODY: &str = r#"
if req_cap >= 0 and a_req > req_cap then
  return {2, 0}
end
if tok_cap >= 0 and a_tok > tok_cap then
  return {3, 0}
end

local function wait_us(level, ask, rate)
  local deficit = ask - level
  if deficit <= 0 then
    return 0
  end
  if rate <= 0 then
    return 86400000000
  end
  return math.min(86400000000, math.ceil(deficit * 60000000 / rate))
end

local req_level, tok_level
local wait = 0
if req_cap >= 0 then
  req_level = load(KEYS[1], req_rate, req_cap)
  wait = math.max(wait, wait_us(req_level, a_req, req_rate))
end
if tok_cap >= 0 then
  tok_level = load(KEYS[2], tok_rate, tok_cap)
  wait = math.max(wait, wait_us(tok_level, a_tok, tok_rate))
end
if wait > 0 then
  return {0, wait}
end
if req_cap >= 0 then
  save(KEYS[1], req_level - a_req, req_rate, req_cap)
end
if tok_cap >= 0 then
  save(KEYS[2], tok_level - a_tok, tok_rate, tok_cap)
end
return {1, 0}
"#;

/// Apply signed corrections `ARGV[5]` (requests) and `ARGV[6]` (tokens) after a refill.
const ADJUST_BODY: &str = r#"
local function apply(key, rate, cap, delta)
  if cap < 0 or delta == 0 then
    return
  end
  local level = load(key, rate, cap) + delta
  if delta > 0 and level > cap then
    level = cap
  end
  save(key, level, rate, cap)
end
apply(KEYS[1], req_rate, req_cap, a_req)
apply(KEYS[2], tok_rate, tok_cap, a_tok)
return 1
"#;

/// Read both levels after refill; writes nothing.
const LEVELS_BODY: &str = r#"
local out = {false, false}
if req_cap >= 0 then
  out[1] = string.format('%.17g', load(KEYS[1], req_rate, req_cap))
end
if tok_cap >= 0 then
  out[2] = string.format('%.17g', load(KEYS[2], tok_rate, tok_cap))
end
return out
"#;

/// The acquisition script (see the module docs for its contract).
pub(crate) fn acquire() -> String {
    format!("{PRELUDE}{ACQUIRE_BODY}")
}

/// The correction script (see the module docs for its contract).
pub(crate) fn adjust() -> String {
    format!("{PRELUDE}{ADJUST_BODY}")
}

/// The read-only levels script (see the module docs for its contract).
pub(crate) fn levels() -> String {
    format!("{PRELUDE}{LEVELS_BODY}")
}
