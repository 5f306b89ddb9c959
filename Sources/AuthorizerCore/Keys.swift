/// The Redis key layout. A contract: operators and tools rely on it (docs/redis-layout-and-locking.md, "Redis key layout").
/// Every key of one account carries the account id as a hash tag so that, in
/// a cluster, an account's keys live on one slot.
public enum Keys {
    public static func account(_ id: String) -> String { "account:{\(id)}" }
    public static func lock(_ id: String) -> String { "lock:{\(id)}" }
    /// A card: HASH status, expiry (YYMM), kind, pan (masked), issued (Unix ms),
    /// replaces / replaced_by. In the account's slot, so authorize.lua reads it
    /// in the execution that debits.
    public static func card(account: String, card: String) -> String { "card:{\(account)}:\(card)" }
    /// The spending controls of the account and of its cards: HASH
    /// `SCOPE.KIND` → value, SCOPE `account` or a card id (see `SpendingControl`).
    public static func controls(account: String) -> String { "controls:{\(account)}" }
    /// What approvals consumed in the controls' current windows: HASH
    /// `SCOPE.W` → `PERIOD:CENTS:APPROVALS` (W `d`, `w`, `m`).
    public static func spent(account: String) -> String { "spent:{\(account)}" }
    /// The benefit order lines credited to the account: HASH `ORDER/LINE` → `CATEGORY:CENTS|ENTRY`.
    public static func orders(account: String) -> String { "orders:{\(account)}" }
    /// The account's cards: SET of card ids.
    public static func cards(account: String) -> String { "cards:{\(account)}" }
    /// The PAN index: STRING `ACCOUNT CARD`, keyed by the hex HMAC-SHA256 of
    /// the PAN (never the PAN). Immutable once written, so serve caches it.
    public static func panIndex(digest: String) -> String { "pan:{\(digest)}" }
    /// The card id index: STRING `ACCOUNT`. Immutable.
    public static func cardIndex(card: String) -> String { "cardid:{\(card)}" }
    /// The older one-key-per-transaction record, still read until it expires.
    public static func transaction(account: String, id: String) -> String { "txn:{\(account)}:\(id)" }
    /// The account's decisions of one UTC day: a HASH transaction id -> record.
    public static func transactions(account: String, day: UTCDay) -> String { transactions(account: account, dayKey: day.compact) }
    /// The same, with the day already written as `YYYYMMDD` (`UTCDay.compact`).
    public static func transactions(account: String, dayKey: String) -> String { "txns:{\(account)}:\(dayKey)" }
    /// Set by the first `serve` that writes day buckets: the Unix ms from which
    /// no older one-key record was written (0: this Redis never held any).
    public static let bucketsSince = "idempotency:buckets-since"
    public static let statements = "statements"
    /// On a cluster, one ledger stream per slot: `statements:{T}`, where T is
    /// the slot's tag (the smallest decimal integer hashing to that slot).
    public static func statements(tag: String) -> String { "statements:{\(tag)}" }
    /// `statements` or `statements:{T}`.
    public static func isStatementsStream(_ key: String) -> Bool {
        key == statements || (key.hasPrefix("statements:{") && key.hasSuffix("}"))
    }
    /// Consumer groups on `statements`: the SQLite replayer and the notifier.
    public static let replayGroup = "replayer"
    public static let notifyGroup = "notifier"
    /// The consumer group of `authorizer webhooks deliver`.
    public static let webhooksGroup = "webhooks"
    /// The capped stream of human-readable notifications of one account.
    public static func notifications(_ account: String) -> String { "notifications:{\(account)}" }
    public static let rulesMCC = "rules:mcc"
    public static let rulesMerchant = "rules:merchant"
    public static let rulesConfig = "rules:config"
    /// Published after the CLI changes the rules, so servers reload at once.
    public static let rulesChangedChannel = "authorizer:rules-changed"

    /// The account id inside `account:{ID}`, or nil for any other key.
    public static func accountOfBalanceKey(_ key: String) -> String? {
        guard key.hasPrefix("account:{"), key.hasSuffix("}") else { return nil }
        return String(key.dropFirst(9).dropLast())
    }

    public static func keyEventChannels(database: Int) -> [String] {
        ["__keyevent@\(database)__:del", "__keyevent@\(database)__:expired"]
    }
}
