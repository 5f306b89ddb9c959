import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation
import RedisWire

struct AccountCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "account",
        abstract: "Show or change an account's balances (each change is a statement).",
        subcommands: [Set.self, Credit.self, Show.self, Freeze.self, Unfreeze.self]
    )

    /// `FOOD=1205.11` pairs, validated.
    static func parseChanges(_ pairs: [String], allowZero: Bool) throws -> [(String, Cents)] {
        var seen: Swift.Set<String> = []
        return try pairs.map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("expected CATEGORY=AMOUNT, got \(pair)") }
            let category = parts[0].uppercased()
            guard CategoryName.isValid(category) else { throw ValidationError("\(parts[0]) is not a category name (A-Z, 0-9, _)") }
            guard seen.insert(category).inserted else { throw ValidationError("\(category) given twice") }
            switch Cents.parse(parts[1], allowZero: allowZero, limit: .maxBalance) {
            case .success(let cents): return (category, cents)
            case .failure(let error): throw ValidationError("\(pair): \(error)")
            }
        }
    }

    static func adjust(kind: String, account: String, changes: [(String, Cents)], redisOptions: RedisOptions) async throws {
        guard Identifier.isValid(account) else { throw ValidationError("account must be 1-64 characters of A-Z a-z 0-9 . _ : -") }
        let scripts = try ScriptLibrary.load()
        let redis = try await RedisSession.open(redisOptions, scripts: scripts.all)
        defer { redis.close() }
        let operation = "\(kind)-\(UInt64(Date().timeIntervalSince1970 * 1000))-\(UInt32.random(in: .min ... .max))"
        let call = ScriptCall.adjust(
            kind: kind, operation: operation, account: account, changes: changes.map { (category: $0.0, cents: $0.1) },
            statements: redis.target.statementsKey(forAccount: account)
        )
        let reply = try await redis.eval(scripts[call.script], keys: call.keys, arguments: call.arguments)
        guard let items = reply.array, items.count == 2, let balances = items[1].string else {
            throw RedisError.unexpectedReply("\(reply)")
        }
        print("account \(account): \(formatBalances(balances))")
    }

    static func formatBalances(_ text: String) -> String {
        text.split(separator: ",").map { pair in
            let parts = pair.split(separator: ":")
            guard parts.count == 2, let cents = Int64(parts[1]) else { return String(pair) }
            return "\(parts[0])=\(Cents(cents))"
        }.joined(separator: " ")
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set balances, e.g. `account set 123 FOOD=1000.00 MEAL=500`.")
        @OptionGroup var redisOptions: RedisOptions
        @Flag(help: "Do nothing when the account already exists.") var ifMissing = false
        @Argument(help: "Account id.") var account: String
        @Argument(help: "CATEGORY=AMOUNT pairs.") var balances: [String]

        func run() async throws {
            let changes = try AccountCommand.parseChanges(balances, allowZero: true)
            guard !changes.isEmpty else { throw ValidationError("give at least one CATEGORY=AMOUNT") }
            if ifMissing {
                let redis = try await RedisSession.open(redisOptions)
                defer { redis.close() }
                let exists = try await redis.send(RedisCommand("EXISTS", Keys.account(account)), key: Keys.account(account)).int == 1
                if exists {
                    print("account \(account) exists; left unchanged")
                    return
                }
            }
            try await AccountCommand.adjust(kind: "set", account: account, changes: changes, redisOptions: redisOptions)
        }
    }

    struct Credit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add to balances, e.g. `account credit 123 MEAL=50.00`.")
        @OptionGroup var redisOptions: RedisOptions
        @Argument(help: "Account id.") var account: String
        @Argument(help: "CATEGORY=AMOUNT pairs.") var amounts: [String]

        func run() async throws {
            let changes = try AccountCommand.parseChanges(amounts, allowZero: false)
            guard !changes.isEmpty else { throw ValidationError("give at least one CATEGORY=AMOUNT") }
            try await AccountCommand.adjust(kind: "credit", account: account, changes: changes, redisOptions: redisOptions)
        }
    }

    /// The account, why, and who: what a freeze and an unfreeze take.
    struct FreezeChange: ParsableArguments {
        @OptionGroup var redisOptions: RedisOptions
        @OptionGroup var who: ChangeAuthor
        @Argument(help: "Account id.") var account: String
        @Option(help: "Why (recorded in the ledger; 1-200 characters).") var reason: String

        func apply(freeze: Bool) async throws {
            try await AccountCommand.freeze(freeze, account: account, reason: reason, by: who.name, redisOptions: redisOptions)
        }
    }

    struct Freeze: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Freeze an account (a court order): every purchase refused, credits and balance inquiries still served."
        )
        @OptionGroup var change: FreezeChange

        func run() async throws { try await change.apply(freeze: true) }
    }

    struct Unfreeze: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lift an account's freeze.")
        @OptionGroup var change: FreezeChange

        func run() async throws { try await change.apply(freeze: false) }
    }

    static func freeze(_ freeze: Bool, account: String, reason: String, by: String, redisOptions: RedisOptions) async throws {
        guard Identifier.isValid(account) else { throw ValidationError("account must be 1-64 characters of A-Z a-z 0-9 . _ : -") }
        guard (1...200).contains(reason.count), !reason.contains(where: \.isNewline) else { throw ValidationError("--reason: 1-200 characters on one line") }
        let scripts = try ScriptLibrary.load()
        let redis = try await RedisSession.open(redisOptions, scripts: scripts.all)
        defer { redis.close() }
        let operation = "\(freeze ? "freeze" : "unfreeze")-\(UInt64(Date().timeIntervalSince1970 * 1000))-\(UInt32.random(in: .min ... .max))"
        let call = ScriptCall.freeze(freeze, operation: operation, account: account, reason: reason, by: by,
                                     statements: redis.target.statementsKey(forAccount: account))
        let reply: RESPValue
        do {
            reply = try await redis.eval(scripts[call.script], keys: call.keys, arguments: call.arguments)
        } catch let error as RedisError {
            throw fail("account \(account): \(error)")
        }
        guard let items = reply.array, items.count == 3, let to = items[2].string else { throw RedisError.unexpectedReply("\(reply)") }
        print(to == "frozen" ? "account \(account) frozen: every purchase refused until unfrozen" : "account \(account) unfrozen")
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print an account's balances and its lock, if held.")
        @OptionGroup var redisOptions: RedisOptions
        @Argument(help: "Account id.") var account: String

        func run() async throws {
            let redis = try await RedisSession.open(redisOptions)
            defer { redis.close() }
            let reply = try await redis.send(RedisCommand("HGETALL", Keys.account(account)), key: Keys.account(account))
            guard let items = reply.array, !items.isEmpty else {
                throw fail("account \(account) does not exist")
            }
            print("account \(account)")
            var index = 0
            var rows: [(String, String)] = []
            while index + 1 < items.count {
                let category = items[index].string ?? "?"
                let raw = items[index + 1].string ?? ""
                rows.append((category, Int64(raw).map { Cents($0).description } ?? "invalid: \(raw)"))
                index += 2
            }
            let width = rows.map(\.1.count).max() ?? 0
            for (category, balance) in rows.sorted(by: { $0.0 < $1.0 }) {
                print("  \(category.padding(toLength: 12, withPad: " ", startingAt: 0)) \(String(repeating: " ", count: width - balance.count))\(balance)")
            }
            let holder = try await redis.send(RedisCommand("GET", Keys.lock(account)), key: Keys.lock(account))
            if let token = holder.string {
                let pttl = try await redis.send(RedisCommand("PTTL", Keys.lock(account)), key: Keys.lock(account)).int ?? -2
                print("  locked by \(token) for \(pttl) ms more")
            }
            let slot = HashSlot.of(key: Keys.account(account))
            let node = try await redis.master(ofKey: Keys.account(account))
            print("  slot \(slot) on \(node.map(\.description) ?? "no master") · ledger stream \(redis.target.statementsKey(forAccount: account))")
        }
    }
}
