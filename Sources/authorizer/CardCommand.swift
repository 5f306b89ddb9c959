import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation
import RedisWire

struct CardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "card",
        abstract: "Issue cards and change their status (each change is a ledger entry).",
        subcommands: [
            Issue.self, Replace.self, Show.self,
            Change.Activate.self, Change.Block.self, Change.Unblock.self, Change.Lost.self, Change.Stolen.self, Change.Cancel.self,
        ]
    )

    /// A card named by id, or by PAN (found through the index; needs the PAN key).
    static func find(_ text: String, redis: RedisSession, keys: PANKeys?) async throws -> (account: String, card: String) {
        guard let reference = CardReference(text) else { throw ValidationError(CardReference.rule) }
        let key: String
        switch reference {
        case .id(let id): key = Keys.cardIndex(card: id)
        case .pan(let pan):
            guard let keys else { throw ValidationError("a card named by PAN needs the PAN key (--pan-key-file or AUTHORIZER_PAN_KEY)") }
            key = Keys.panIndex(digest: PANKeys.digest(pan, key: keys.current))
        }
        guard let value = try await redis.send(RedisCommand("GET", key), key: key).string else {
            throw fail("no card \(reference.shown)")
        }
        switch reference {
        case .id(let id): return (value, id)
        case .pan:
            guard case .card(let account, let card) = CardDirectory.parseIndexEntry(value) else { throw fail("index entry of \(reference.shown) is malformed") }
            return (account, card)
        }
    }

    /// Indexes and issues a card on `account`; prints it. `replaces`: the card it replaces.
    static func issue(
        account: String, pan given: String?, generate: Bool, bin: String, expiry: String?, kind: CardKind, pending: Bool, replaces: String?,
        by: String, redis: RedisSession, scripts: ScriptLibrary, keys: PANKeys?, zone: TimeZone
    ) async throws {
        guard let keys else { throw ValidationError("issuing a card needs the PAN key (--pan-key-file or AUTHORIZER_PAN_KEY)") }
        guard (given != nil) != generate else { throw ValidationError("give --pan or --generate") }
        var generator = SystemRandomNumberGenerator()
        let pan: PAN
        if let given {
            guard let parsed = PAN(given), parsed.passesLuhn else { throw ValidationError("--pan must be 12-19 digits with a valid check digit") }
            pan = parsed
        } else {
            guard PAN(bin + "000000") != nil, bin.utf8.count == 6 else { throw ValidationError("--bin must be 6 digits") }
            pan = PAN.generate(bin: bin, using: &generator)
        }
        let validThrough: CardExpiry
        if let expiry {
            guard let parsed = CardExpiry(expiry) else { throw ValidationError("--expiry must be YYMM") }
            validThrough = parsed
        } else {
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = zone
            let now = calendar.dateComponents([.year, .month], from: Date())
            validThrough = CardExpiry(year: now.year! % 100, month: now.month!).adding(years: 5)
        }
        guard try await redis.send(RedisCommand("EXISTS", Keys.account(account)), key: Keys.account(account)).int == 1 else {
            throw fail("account \(account) does not exist")
        }
        let card = CardID.generate(using: &generator)
        let index = Keys.panIndex(digest: PANKeys.digest(pan, key: keys.current))
        guard try await redis.send(RedisCommand("SET", index, "\(account) \(card)", "NX"), key: index).string == "OK" else {
            throw fail("PAN \(pan.masked) is already issued")
        }
        _ = try await redis.send(RedisCommand("SET", Keys.cardIndex(card: card), account, "NX"), key: Keys.cardIndex(card: card))
        let call = ScriptCall.issueCard(
            operation: "card-\(card)", account: account, card: card, status: pending ? .pending : .active, expiry: validThrough, kind: kind,
            maskedPAN: pan.masked, replaces: replaces, by: by, statements: redis.target.statementsKey(forAccount: account)
        )
        do {
            _ = try await redis.eval(scripts[call.script], keys: call.keys, arguments: call.arguments)
        } catch RedisError.server(let message) {
            throw fail(message.hasPrefix("ERR ") ? String(message.dropFirst(4)) : message)
        }
        print("card \(card) on account \(account): \(pending ? "pending" : "active"), expires \(validThrough), \(kind.rawValue), PAN \(pan.masked)")
        if given == nil {
            // The only time a generated PAN is shown: to put it on the card.
            print("PAN \(pan.digits) (shown once; not stored)")
        }
        if let replaces { print("card \(replaces) replaced by \(card)") }
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a card on an account: `card issue ACCOUNT --generate`.")
        @OptionGroup var redisOptions: RedisOptions
        @OptionGroup var panKey: PANKeyOptions
        @OptionGroup var zone: ZoneOptions
        @OptionGroup var who: ChangeAuthor
        @Argument(help: "Account id.") var account: String
        @Option(help: "The card's PAN (12-19 digits, Luhn check digit).") var pan: String?
        @Flag(help: "Generate a PAN (16 digits under --bin), printed once.") var generate = false
        @Option(help: "The BIN of a generated PAN.") var bin = "999000"
        @Option(help: "Expiry, YYMM (default: five years from this month).") var expiry: String?
        @Option(help: "physical or virtual.") var kind: CardKind = .physical
        @Flag(help: "Issue it pending (it authorizes once activated).") var pending = false

        func run() async throws {
            guard Identifier.isValid(account) else { throw ValidationError("account must be 1-64 characters of A-Z a-z 0-9 . _ : -") }
            let scripts = try ScriptLibrary.load()
            let redis = try await RedisSession.open(redisOptions, scripts: scripts.all)
            defer { redis.close() }
            try await CardCommand.issue(
                account: account, pan: pan, generate: generate, bin: bin, expiry: expiry, kind: kind, pending: pending, replaces: nil,
                by: who.name, redis: redis, scripts: scripts, keys: try panKey.keys(), zone: try zone.zone()
            )
        }
    }

    struct Replace: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a new card on the same account; the old one is cancelled (unless already lost, stolen or cancelled)."
        )
        @OptionGroup var redisOptions: RedisOptions
        @OptionGroup var panKey: PANKeyOptions
        @OptionGroup var zone: ZoneOptions
        @OptionGroup var who: ChangeAuthor
        @Argument(help: "The card replaced: its id or PAN.") var card: String
        @Option(help: "The new card's PAN.") var pan: String?
        @Flag(help: "Generate the new card's PAN, printed once.") var generate = false
        @Option(help: "The BIN of a generated PAN.") var bin = "999000"
        @Option(help: "Expiry, YYMM (default: five years from this month).") var expiry: String?

        func run() async throws {
            let scripts = try ScriptLibrary.load()
            let redis = try await RedisSession.open(redisOptions, scripts: scripts.all)
            defer { redis.close() }
            let keys = try panKey.keys()
            let old = try await CardCommand.find(card, redis: redis, keys: keys)
            let oldKey = Keys.card(account: old.account, card: old.card)
            let kind = try await redis.send(RedisCommand("HGET", oldKey, "kind"), key: oldKey).string.flatMap(CardKind.init) ?? .physical
            try await CardCommand.issue(
                account: old.account, pan: pan, generate: generate, bin: bin, expiry: expiry, kind: kind, pending: false, replaces: old.card,
                by: who.name, redis: redis, scripts: scripts, keys: keys, zone: try zone.zone()
            )
        }
    }

    /// The status changes, one subcommand each (`Lua/card.lua` decides which are allowed).
    enum Change {
        /// What every status change takes: the card, Redis, the PAN key, who.
        struct Options: ParsableArguments {
            @OptionGroup var redisOptions: RedisOptions
            @OptionGroup var panKey: PANKeyOptions
            @OptionGroup var who: ChangeAuthor
            @Argument(help: "Card id or PAN.") var card: String
        }

        static func run(_ options: Options, to status: CardStatus) async throws {
            let scripts = try ScriptLibrary.load()
            let redis = try await RedisSession.open(options.redisOptions, scripts: scripts.all)
            defer { redis.close() }
            let found = try await CardCommand.find(options.card, redis: redis, keys: try options.panKey.keys())
            let call = ScriptCall.changeCard(
                operation: "card-\(found.card)-\(UInt64(Date().timeIntervalSince1970 * 1000))", account: found.account, card: found.card,
                to: status, by: options.who.name, statements: redis.target.statementsKey(forAccount: found.account)
            )
            let reply: RESPValue
            do {
                reply = try await redis.eval(scripts[call.script], keys: call.keys, arguments: call.arguments)
            } catch RedisError.server(let message) {
                throw fail(message.hasPrefix("ERR ") ? String(message.dropFirst(4)) : message)
            }
            let from = reply.array.flatMap { $0.count == 3 ? $0[1].string : nil } ?? "?"
            print("card \(found.card) on account \(found.account): \(from) -> \(status.rawValue)")
        }

        struct Activate: StatusChange {
            static let configuration = CommandConfiguration(abstract: "Activate a pending card.")
            static let status = CardStatus.active
            @OptionGroup var options: Options
        }

        struct Block: StatusChange {
            static let configuration = CommandConfiguration(abstract: "Block a card for now (unblock reverses it).")
            static let status = CardStatus.blocked
            @OptionGroup var options: Options
        }

        struct Unblock: StatusChange {
            static let configuration = CommandConfiguration(abstract: "Unblock a blocked card.")
            static let status = CardStatus.active
            @OptionGroup var options: Options
        }

        struct Lost: StatusChange {
            static let configuration = CommandConfiguration(abstract: "Report a card lost (final: replace it).")
            static let status = CardStatus.lost
            @OptionGroup var options: Options
        }

        struct Stolen: StatusChange {
            static let configuration = CommandConfiguration(abstract: "Report a card stolen (final: replace it).")
            static let status = CardStatus.stolen
            @OptionGroup var options: Options
        }

        struct Cancel: StatusChange {
            static let configuration = CommandConfiguration(abstract: "Cancel a card (final).")
            static let status = CardStatus.cancelled
            @OptionGroup var options: Options
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a card, or every card of an account.")
        @OptionGroup var redisOptions: RedisOptions
        @OptionGroup var panKey: PANKeyOptions
        @Argument(help: "Card id or PAN.") var card: String?
        @Option(help: "Every card of this account.") var account: String?

        func run() async throws {
            guard (card == nil) != (account == nil) else { throw ValidationError("give a card or --account") }
            let redis = try await RedisSession.open(redisOptions)
            defer { redis.close() }
            var rows: [(account: String, card: String)] = []
            if let card {
                rows = [try await CardCommand.find(card, redis: redis, keys: try panKey.keys())]
            } else if let account {
                let members = try await redis.send(RedisCommand("SMEMBERS", Keys.cards(account: account)), key: Keys.cards(account: account))
                rows = (members.array ?? []).compactMap(\.string).sorted().map { (account, $0) }
                if rows.isEmpty { print("account \(account) has no cards") }
            }
            for row in rows {
                let key = Keys.card(account: row.account, card: row.card)
                let fields = try await redis.send(RedisCommand("HGETALL", key), key: key).array?.compactMap(\.string) ?? []
                var card: [String: String] = [:]
                var index = 0
                while index + 1 < fields.count {
                    card[fields[index]] = fields[index + 1]
                    index += 2
                }
                var line = "card \(row.card) on account \(row.account): \(card["status"] ?? "missing")"
                line += ", expires \(card["expiry"] ?? "?"), \(card["kind"] ?? "?"), PAN \(card["pan"] ?? "?")"
                if let replaces = card["replaces"], !replaces.isEmpty { line += ", replaces \(replaces)" }
                if let replacedBy = card["replaced_by"], !replacedBy.isEmpty { line += ", replaced by \(replacedBy)" }
                print(line)
            }
        }
    }
}

extension CardKind: ExpressibleByArgument {}

/// A subcommand that moves a card to `status`.
protocol StatusChange: AsyncParsableCommand {
    static var status: CardStatus { get }
    var options: CardCommand.Change.Options { get }
}

extension StatusChange {
    func run() async throws { try await CardCommand.Change.run(options, to: Self.status) }
}
