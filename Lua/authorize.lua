--[[
  Authorize one card transaction: take the account lock, check idempotency,
  choose the category to debit, debit it, append the statement and remember
  the decision, all in one atomic execution.

  Input:
    KEYS[1]  account:{ID}            HASH category -> balance in cents
    KEYS[2]  lock:{ID}               STRING lock token
    KEYS[3]  statements              STREAM the ledger (statements:{T} on a cluster)
    KEYS[4]  txn:{ID}:TXNID          STRING the older one-key-per-transaction record,
                                     read only when ARGV[15] is "1"
    KEYS[5..]  txns:{ID}:YYYYMMDD    HASH transaction id -> record, one per account
                                     and UTC day: B consecutive days (ARGV[16]),
                                     newest first, KEYS[5] being the caller's
                                     tomorrow (so that a caller whose clock is a
                                     little behind Redis's still names Redis's today)
               (KEYS[5] to KEYS[4+B])
    then, after the buckets:
               controls:{ID}         HASH the spending controls of the account
                                     ("account.KIND") and of its cards ("CARD.KIND"):
                                     KIND per_txn, day_amount, day_count,
                                     week_amount, week_count, month_amount,
                                     month_count, rolling_seconds, rolling_amount,
                                     rolling_count (cents, a count or seconds), blocked_mcc
                                     (comma list of MCCs), blocked_merchant
                                     (comma list of merchant digests); and
                                     "account.frozen" (the reason) while the
                                     account is frozen: every purchase refused
               spent:{ID}            HASH what approvals consumed in the current
                                     windows: "SCOPE.W" -> PERIOD:CENTS:APPROVALS
                                     (W: d day, w week from Monday, m month,
                                     civil in the issuer's zone; PERIOD in days,
                                     weeks or months since 1970; a window is
                                     counted while a limit is set on it); "SCOPE.r"
                                     -> SECOND:CENTS,... the approvals of the
                                     trailing window (rolling_seconds)
    then, only when ARGV[17] names a card:
               card:{ID}:CARD        HASH status, expiry (YYMM), pan (masked), ...

    ARGV[1]  lock token (random per request)
    ARGV[2]  lock ttl in milliseconds; 0: nothing of the caller follows on
             this account, so the lock is not kept past this execution (it
             is only checked, and released if the caller held it)
    ARGV[3]  transaction id
    ARGV[4]  account id
    ARGV[5]  amount in cents (integer, > 0)
    ARGV[6]  mcc as sent by the terminal
    ARGV[7]  mcc used after merchant rules
    ARGV[8]  merchant descriptor as sent
    ARGV[9]  category the rules chose
    ARGV[10] fallback category
    ARGV[11] fallback mode: "whole" or "split"
    ARGV[12] the day of KEYS[5], in days since 1970-01-01 (UTC)
    ARGV[13] digest of the normalized merchant descriptor (8 hex digits; kept
             for a reversal's match check)
    ARGV[14] seconds a day's bucket outlives its day (the reversal window plus a day)
    ARGV[15] "1": also read KEYS[4] (records written before the day buckets)
    ARGV[16] B, the number of day buckets in KEYS
    ARGV[17] card id, or "" (no card: nothing of cards is read)
    ARGV[18] the expiry the terminal read from the card (YYMM), or "" (not checked)
    ARGV[19] seconds east of UTC of the issuer's time zone, now (the civil
             month that decides whether a card has expired, and the civil
             day, week and month of the controls' windows)
    ARGV[20] when the request was received (the serve's wall clock, µs
             since 1970): recorded as HEARD, the latest attempt answered the
             approval (see reverse.lua's ARGV[14])
    ARGV[21] the program's controls (the rules'): "KIND=VALUE;KIND=VALUE"
             with the kinds and values of controls:{ID}, or "" (none; an
             absent ARGV[21] reads as none); counted in spent:{ID} as
             "program.W"
    ARGV[22..] optional: extra statement fields as name, value pairs appended
             to the statement after the usual ones (the ISO 8583 port sends
             channel, stan, rrn, terminal, merchant_id); none from the
             line-JSON port

  Output (array):
    {"UNKNOWN"}                               account does not exist; nothing written
    {"LOCKED", pttl}                          another holder has the lock (and the id
                                              was not decided before); pttl = its
                                              remaining ms (-1: no expiry)
    {"DONE", code, detail, replayed, entryid} decision made; code "00" | "51" | "07"
                                              (a card that is unknown, not active or
                                              expired: 07 with "unknown card", "card
                                              blocked", "card expired", ...);
                                              detail = debits ("MEAL:700,CASH:300") for
                                              00, reason for 07, "" for 51; a repeat of
                                              an approval reversed since: 07 "reversed";
                                              replayed = 1 when the transaction id was
                                              seen before (nothing debited; with a ttl
                                              its record is rewritten as it was, so a
                                              WAIT that follows covers it; the lock is
                                              then not taken)
    error "ERR clock …"                       Redis's day is not among KEYS[5..]
                                              (the caller's clock is off by a day)
  With a ttl, the caller holds the lock after LOCKED is not returned, and
  releases it with unlock.lua (or passes it to its next request for the
  account, which calls with the same token). Without (ttl 0), taking and
  releasing inside one atomic execution could not be observed by anybody:
  the lock is only checked (another holder: LOCKED), and a lock the caller
  held is released here (its DEL wakes the waiters).

  Redis's clock (TIME) decides the day: the decision is remembered in
  today's bucket, and an id is looked up in today's bucket and in every
  older one named in KEYS (yesterday's at least: an id is recognised for
  24 hours at least). A record is
    CODE|DETAIL|AMOUNT|MCC|SECOND|REVERSED_BY|MERCHANT_DIGEST
  CODE 00/51/07; DETAIL the debits of a 00 (MEAL:700,CASH:300), the reason of
  a 07, empty for a 51; AMOUNT in cents; SECOND of the bucket's day when it
  was decided; REVERSED_BY the id of the reversal that reversed it, empty
  until then; HEARD (µs, the serves' wall clock) when the latest attempt
  answered the decision was received: the first attempt's, raised by each
  repeat answered the approval (records of earlier versions end at the
  digest); CONSUMED, on an approval counted in controls' windows, the
  windows as SCOPE.W/PERIOD items, comma-separated ("account.d/20430,
  crd_x.m/24323, program.r/1796689007"; SCOPE "account", a card id or
  "program", W d|w|m|r; the trailing window's PERIOD is the approval's
  second), so that its reversal gives back what it consumed in the windows
  still current (from a trailing window: its item, while still there).
  reverse.lua reads and updates it; a tombstone left by a
  reversal whose original was never seen is such a record with CODE 07 and
  DETAIL "reversed". A record starting with "RV|" belongs to a reversal's own
  id (see reverse.lua). The older one-key form (KEYS[4]) is
  CODE|DETAIL|AMOUNT|MCC|TIME_MS|REVERSED_BY|MERCHANT or CODE|DETAIL.
]]
local account, lock, statements = KEYS[1], KEYS[2], KEYS[3]

local now = redis.call('TIME')
local seconds = tonumber(now[1])
local day = math.floor(seconds / 86400)
local lastBucket = 4 + tonumber(ARGV[16])
local todayKey = 5 + tonumber(ARGV[12]) - day
if todayKey < 5 or todayKey >= lastBucket then
  return redis.error_reply('ERR clock: Redis day ' .. day .. ' is not among the buckets named (newest ' .. ARGV[12] .. ')')
end

-- The balances first: a missing account has neither field (EXISTS only then).
local category, fallback = ARGV[9], ARGV[10]
local balances = redis.call('HMGET', account, category, fallback)
local categoryRaw, fallbackRaw = balances[1], balances[2]
if not categoryRaw and not fallbackRaw and redis.call('EXISTS', account) == 0 then
  return {'UNKNOWN'}
end

-- A record with HEARD raised to `at` (µs), when `at` is later.
local function heardBy(record, at)
  local head, heard, rest = string.match(record, '^([^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*)|?(%d*)(.*)$')
  local atNumber = tonumber(at)
  if not head or not atNumber or (tonumber(heard) or 0) >= atNumber then return record end
  return head .. '|' .. at .. rest
end

-- A decided id gets its first decision whatever the lock: a holder that died
-- with this id's script in flight must not turn its approval into a 07.
local token, id = ARGV[1], ARGV[3]
local where, prior
for k = todayKey, lastBucket do
  prior = redis.call('HGET', KEYS[k], id)
  if prior then where = k break end
end
if not prior and ARGV[15] == '1' then
  prior = redis.call('GET', KEYS[4])
  if prior then where = 4 end
end
if prior then
  local code, rest = string.match(prior, '^(%d%d)|(.*)$')
  local reversedBy = code and string.match(rest, '^[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)')
  local record = prior
  if code == '00' and reversedBy == '' and where >= 5 then
    -- This repeat is answered the approval: a reversal the service owes for
    -- an earlier attempt's 07 must not undo what the terminal heard last.
    record = heardBy(prior, ARGV[20])
  end
  if ARGV[2] == '0' then
    if redis.call('GET', lock) == token then redis.call('DEL', lock) end
    if record ~= prior then redis.pcall('HSET', KEYS[where], id, record) end
  elseif where == 4 then
    -- A ttl: the caller may WAIT for replicas next; this write makes the
    -- WAIT cover the one that made the record (pcall: at maxmemory it is
    -- refused, and the first decision is still the answer).
    redis.pcall('SET', KEYS[4], prior, 'KEEPTTL')
  else
    redis.pcall('HSET', KEYS[where], id, record)
  end
  if not code then
    return {'DONE', '07', 'id already used by a reversal', 1, ''}
  end
  -- An approval reversed since (by the terminal, or by the service after a
  -- timeout of one of its repeats) is answered as reversed: it debits nothing now.
  if code == '00' and reversedBy and reversedBy ~= '' then
    return {'DONE', '07', 'reversed', 1, ''}
  end
  return {'DONE', code, string.match(rest, '^([^|]*)'), 1, ''}
end

if ARGV[2] == '0' then
  local holder = redis.call('GET', lock)
  if holder then
    if holder ~= token then
      return {'LOCKED', redis.call('PTTL', lock)}
    end
    redis.call('DEL', lock)
  end
elseif not redis.call('SET', lock, token, 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', lock) ~= token then
    return {'LOCKED', redis.call('PTTL', lock)}
  end
  redis.call('PEXPIRE', lock, ARGV[2])
end

local amountText = ARGV[5]
local amount = tonumber(amountText)
local mode = ARGV[11]

-- Balances are integer cents (below 2^53: string.format('%d') prints them
-- exactly); anything else is refused rather than guessed.
local function balanceOf(value)
  if not value then return 0, true end
  if not string.match(value, '^%-?%d+$') then return 0, false end
  return tonumber(value), true
end
local categoryBalance, categoryOk = balanceOf(categoryRaw)
local fallbackBalance, fallbackOk = balanceOf(fallbackRaw)

-- The card, when one is named: status, then expiry (the last day of its
-- month, in the issuer's zone), then the expiry the terminal read.
local cardID, maskedPAN, cardRefusal = ARGV[17], '', nil
local finalStatus = {blocked = true, lost = true, stolen = true, cancelled = true}
-- (a - a % b) / b is math.floor(a / b) for the integers here, without a
-- call into C: this runs on every authorization with a card or a control.
local function yearMonth(days)
  local z = days + 719468
  local era = (z - z % 146097) / 146097
  local doe = z - era * 146097
  local yoe = doe - (doe - doe % 1460) / 1460 + (doe - doe % 36524) / 36524 - (doe - doe % 146096) / 146096
  yoe = (yoe - yoe % 365) / 365
  local doy = doe - (365 * yoe + (yoe - yoe % 4) / 4 - (yoe - yoe % 100) / 100)
  local mp = (5 * doy + 2 - (5 * doy + 2) % 153) / 153
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then year = year + 1 end
  return year, month
end
local localSeconds = seconds + tonumber(ARGV[19])
local localDays = (localSeconds - localSeconds % 86400) / 86400
if cardID ~= '' then
  local card = redis.call('HMGET', KEYS[lastBucket + 3], 'status', 'expiry', 'pan')
  local status, expiry = card[1], card[2]
  maskedPAN = card[3] or ''
  if not status then
    cardRefusal = 'unknown card'
  elseif status == 'pending' then
    cardRefusal = 'card not activated'
  elseif status ~= 'active' then
    -- Anything but active refuses; a status this script does not know reads as blocked.
    cardRefusal = 'card ' .. (finalStatus[status] and status or 'blocked')
  elseif not expiry or not string.match(expiry, '^%d%d%d%d$') then
    cardRefusal = 'card expired'
  else
    local year, month = yearMonth(localDays)
    if year * 12 + month > (2000 + tonumber(string.sub(expiry, 1, 2))) * 12 + tonumber(string.sub(expiry, 3, 4)) then
      cardRefusal = 'card expired'
    elseif ARGV[18] ~= '' and ARGV[18] ~= expiry then
      cardRefusal = 'card expiry does not match'
    end
  end
end

-- Spending controls: the account's and the card's (controls:{ID}) and the
-- program's (ARGV[21]); every one set must pass, so the tightest wins.
-- Windows are civil in the issuer's zone, or trailing; a civil window counts
-- from its period's first approval. An account without controls costs one
-- HGETALL of a missing key; with controls, one HMGET of the windows'
-- counters and, for an approval, one HSET. This runs on every authorization
-- of an account with controls: it creates as few strings and tables as it
-- can (each is an allocation for Redis's Lua, and garbage to collect).
local controlRefusal, windows = nil, nil
local controls = redis.call('HGETALL', KEYS[lastBucket + 1])
local programText = ARGV[21] or ''
if (#controls > 0 or programText ~= '') and not cardRefusal then
  -- Each scope's controls by kind: "account.KIND", "CARD.KIND" of this card
  -- (other cards' skipped), the program's "KIND=VALUE;..." from ARGV[21].
  local accountLimits, cardLimits, programLimits = nil, nil, nil
  local cardPrefixLength = #cardID + 1
  for i = 1, #controls, 2 do
    local field = controls[i]
    if string.find(field, 'account.', 1, true) == 1 then
      accountLimits = accountLimits or {}
      accountLimits[string.sub(field, 9)] = controls[i + 1]
    elseif cardID ~= '' and string.byte(field, cardPrefixLength) == 46 and string.find(field, cardID, 1, true) == 1 then
      cardLimits = cardLimits or {}
      cardLimits[string.sub(field, cardPrefixLength + 1)] = controls[i + 1]
    end
  end
  if programText ~= '' then
    programLimits = {}
    for kind, value in string.gmatch(programText, '([%a_]+)=([^;]*)') do programLimits[kind] = value end
  end

  -- First the refusals that need no counter, in every scope.
  local function refusalOf(limits)
    if not limits then return nil end
    local mccs = limits.blocked_mcc
    if mccs then
      mccs = ',' .. mccs .. ','
      if string.find(mccs, ',' .. ARGV[6] .. ',', 1, true) or string.find(mccs, ',' .. ARGV[7] .. ',', 1, true) then
        return 'merchant category not allowed'
      end
    end
    if limits.blocked_merchant and string.find(',' .. limits.blocked_merchant .. ',', ',' .. ARGV[13] .. ',', 1, true) then
      return 'merchant not allowed'
    end
    if limits.per_txn and amount > tonumber(limits.per_txn) then return 'amount over the per-transaction limit' end
    return nil
  end
  -- A frozen account (account.frozen, set by freeze.lua) refuses every purchase.
  if accountLimits and accountLimits.frozen then controlRefusal = 'account frozen' end
  controlRefusal = controlRefusal or refusalOf(accountLimits) or refusalOf(cardLimits) or refusalOf(programLimits)

  -- Then the windows with a limit (only those are counted), all read in one
  -- HMGET: field SCOPE.W; civil windows (W d, w, m) hold
  -- PERIOD:CENTS:APPROVALS, the trailing one (W r, rolling_seconds long)
  -- the approvals still inside it, "SECOND:CENTS,SECOND:CENTS". A window:
  -- {field, w, amount limit, count limit, period, cents, approvals, started,
  -- kept items, seconds}. A trailing window keeps at most maxTrailing
  -- approvals (a further one within it is refused as too many).
  local maxTrailing = 200
  if not controlRefusal then
    local fields = {}
    windows = {}
    local function add(scope, w, amountLimit, countLimit, rollingSeconds)
      if amountLimit or countLimit then
        local field = scope .. (w == 1 and '.d' or w == 2 and '.w' or w == 3 and '.m' or '.r')
        fields[#fields + 1] = field
        windows[#windows + 1] = {field, w, tonumber(amountLimit), tonumber(countLimit)}
        windows[#windows][10] = rollingSeconds
      end
    end
    local function addScope(scope, limits)
      if not limits then return end
      add(scope, 1, limits.day_amount, limits.day_count)
      add(scope, 2, limits.week_amount, limits.week_count)
      add(scope, 3, limits.month_amount, limits.month_count)
      if limits.rolling_seconds then add(scope, 4, limits.rolling_amount, limits.rolling_count, tonumber(limits.rolling_seconds)) end
    end
    addScope('account', accountLimits)
    addScope(cardID, cardLimits)
    addScope('program', programLimits)
    if #fields > 0 then
      local values = redis.call('HMGET', KEYS[lastBucket + 2], unpack(fields))
      for i = 1, #fields do
        local window, value = windows[i], values[i] or ''
        local w, spentAmount, spentCount = window[2], 0, 0
        if w == 4 then
          -- The approvals of the last rolling_seconds (a second's edge inside).
          local kept, since = {}, seconds - window[10]
          for second, cents in string.gmatch(value, '(%d+):(%d+)') do
            if tonumber(second) > since then
              kept[#kept + 1] = second .. ':' .. cents
              spentAmount, spentCount = spentAmount + tonumber(cents), spentCount + 1
            end
          end
          if spentCount >= maxTrailing then controlRefusal = 'too many transactions in a short time' break end
          window[5], window[8], window[9] = string.format('%d', seconds), true, kept
        else
          local period
          if w == 1 then
            period = string.format('%d', localDays)
          elseif w == 2 then
            local week = localDays + 3
            period = string.format('%d', (week - week % 7) / 7)
          else
            local year, month = yearMonth(localDays)
            period = string.format('%d', year * 12 + month - 1)
          end
          local stored, cents, approvals = string.match(value, '^(%d+):(%d+):(%d+)$')
          if stored == period then spentAmount, spentCount = tonumber(cents), tonumber(approvals) end
          window[5], window[8] = period, stored == period
        end
        window[6], window[7] = spentAmount, spentCount
        if window[3] and spentAmount + amount > window[3] then
          controlRefusal = w == 1 and 'daily limit reached' or w == 2 and 'weekly limit reached'
            or w == 3 and 'monthly limit reached' or 'recent spending limit reached'
          break
        end
        if window[4] and spentCount + 1 > window[4] then
          controlRefusal = w == 1 and 'too many transactions today' or w == 2 and 'too many transactions this week'
            or w == 3 and 'too many transactions this month' or 'too many transactions in a short time'
          break
        end
      end
    end
  end
end

local code, reason, debitText, balanceText = '51', '', '', ''
if cardRefusal then
  code, reason = '07', cardRefusal
elseif controlRefusal then
  code, reason = '07', controlRefusal
elseif not (categoryOk and fallbackOk) then
  code, reason = '07', 'balance is not an integer amount of cents'
elseif categoryBalance >= amount then
  code = '00'
  debitText = category .. ':' .. amountText
  balanceText = category .. ':' .. string.format('%d', redis.call('HINCRBY', account, category, -amount))
elseif category ~= fallback then
  local fromCategory = 0
  if mode == 'split' then fromCategory = math.max(0, categoryBalance) end
  if fallbackBalance >= amount - fromCategory then
    code = '00'
    local fromFallback = amount - fromCategory
    local after = redis.call('HINCRBY', account, fallback, -fromFallback)
    if fromCategory > 0 then
      local categoryAfter = redis.call('HINCRBY', account, category, -fromCategory)
      debitText = category .. ':' .. string.format('%d', fromCategory) .. ',' .. fallback .. ':' .. string.format('%d', fromFallback)
      balanceText = category .. ':' .. string.format('%d', categoryAfter) .. ',' .. fallback .. ':' .. string.format('%d', after)
    else
      debitText = fallback .. ':' .. amountText
      balanceText = fallback .. ':' .. string.format('%d', after)
    end
  end
end

local fields = {
  'type', 'authorization',
  'id', id,
  'account', ARGV[4],
  'code', code,
  'amount', amountText,
  'mcc', ARGV[6],
  'mcc_used', ARGV[7],
  'merchant', ARGV[8],
  'category', category,
  'debits', debitText,
  'balances', balanceText,
  'reason', reason}
if cardID ~= '' then
  fields[#fields + 1] = 'card'
  fields[#fields + 1] = cardID
  fields[#fields + 1] = 'pan'
  fields[#fields + 1] = maskedPAN
end
for i = 22, #ARGV - 1, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
local entry = redis.call('XADD', statements, '*', unpack(fields))

-- An approval counts in the windows that have a limit (only approvals count).
local consumed = ''
if code == '00' and windows and #windows > 0 then
  local pairs_, items, started = {}, {}, false
  for i = 1, #windows do
    local window = windows[i]
    pairs_[2 * i - 1] = window[1]
    if window[2] == 4 then
      local kept = window[9]
      kept[#kept + 1] = window[5] .. ':' .. amountText
      pairs_[2 * i] = table.concat(kept, ',')
    else
      pairs_[2 * i] = window[5] .. ':' .. string.format('%d', window[6] + amount) .. ':' .. string.format('%d', window[7] + 1)
    end
    if not window[8] then started = true end
    items[i] = window[1] .. '/' .. window[5]
  end
  redis.call('HSET', KEYS[lastBucket + 2], unpack(pairs_))
  -- Set when a window's period starts: the longest window and a margin (an
  -- account idle that long has nothing to count).
  if started then redis.call('EXPIRE', KEYS[lastBucket + 2], 35 * 86400) end
  consumed = '|' .. table.concat(items, ',')
end

local detail = debitText
if code == '07' then detail = reason end
local bucket = KEYS[todayKey]
redis.call('HSET', bucket, id, code .. '|' .. detail .. '|' .. amountText .. '|' .. ARGV[6] .. '|'
  .. (seconds - day * 86400) .. '||' .. ARGV[13] .. '|' .. ARGV[20] .. consumed)
-- NX: set once per bucket (no expire keyevent on every decision).
redis.call('EXPIREAT', bucket, (day + 1) * 86400 + tonumber(ARGV[14]), 'NX')
return {'DONE', code, detail, 0, entry}
