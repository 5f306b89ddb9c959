import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation
import RedisWire

struct ControlsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controls",
        abstract: "Set, show and clear the spending controls of an account, a card or the program (checked with the debit).",
        subcommands: [Set.self, Show.self, Clear.self]
    )

    /// The account, a card (by id or PAN) and its account, or the program.
    struct Target: ParsableArguments {
        @Option(help: "The account's own controls (every card of it).") var account: String?
        @Option(help: "One card's controls (card id or PAN).") var card: String?
        @Flag(help: "The program's controls (every account; kept in the rules, see rules show).") var program = false

        func validate() throws {
            guard [account != nil, card != nil, program].filter({ $0 }).count == 1 else { throw ValidationError("give one of --account, --card, --program") }
        }

        func resolve(_ redis: RedisSession, keys: PANKeys?) async throws -> (account: String, scope: ControlScope) {
            if program { return ("", .program) }
            if let account {
                guard Identifier.isValid(account) else { throw ValidationError("--account: 1-64 characters of [A-Za-z0-9._:-]") }
                return (account, .account)
            }
            let found = try await CardCommand.find(card!, redis: redis, keys: keys)
            return (found.account, .card(found.card))
        }

        /// A session to Redis and the target resolved through it; the caller closes the session.
        func open(_ redisOptions: RedisOptions, _ panKey: PANKeyOptions) async throws -> (redis: RedisSession, account: String, scope: ControlScope) {
            let redis = try await RedisSession.open(redisOptions)
            do {
                let (account, scope) = try await resolve(redis, keys: try panKey.keys())
                return (redis, account, scope)
            } catch {
                redis.close()
                throw error
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set controls (the others of the scope stay as they are).",
            discussion: "Amounts in reais (12.50); windows are civil days, weeks from Monday and months in the issuer's time zone."
        )
        @OptionGroup var redisOptions: RedisOptions
        @OptionGroup var panKey: PANKeyOptions
        @OptionGroup var target: Target
        @Option(help: "Largest amount of one authorization.") var perTransaction: String?
        @Option(help: "Amount approved per day.") var dailyAmount: String?
        @Option(help: "Approvals per day.") var dailyCount: Int?
        @Option(help: "Amount approved per week.") var weeklyAmount: String?
        @Option(help: "Approvals per week.") var weeklyCount: Int?
        @Option(help: "Amount approved per month.") var monthlyAmount: String?
        @Option(help: "Approvals per month.") var monthlyCount: Int?
        @Option(help: "The trailing window's length in seconds (60 to 2678400), for --rolling-amount and --rolling-count.") var rollingSeconds: Int?
        @Option(help: "Amount approved in any trailing window.") var rollingAmount: String?
        @Option(help: "Approvals in any trailing window (at most \(ControlKind.maxTrailingApprovals)).") var rollingCount: Int?
        @Option(help: "MCCs refused, comma-separated (7995,5933).") var blockedMcc: String?
        @Option(help: "A merchant refused (its descriptor as terminals send it); repeatable.") var blockedMerchant: [String] = []

        func values() throws -> [(ControlKind, String)] {
            let given: [(ControlKind, [String]?)] = [
                (.perTransaction, perTransaction.map { [$0] }), (.dayAmount, dailyAmount.map { [$0] }),
                (.weekAmount, weeklyAmount.map { [$0] }), (.monthAmount, monthlyAmount.map { [$0] }),
                (.dayCount, dailyCount.map { [String($0)] }), (.weekCount, weeklyCount.map { [String($0)] }),
                (.monthCount, monthlyCount.map { [String($0)] }), (.rollingSeconds, rollingSeconds.map { [String($0)] }),
                (.rollingAmount, rollingAmount.map { [$0] }), (.rollingCount, rollingCount.map { [String($0)] }),
                (.blockedMCC, blockedMcc.map { [$0] }),
                (.blockedMerchant, blockedMerchant.isEmpty ? nil : blockedMerchant),
            ]
            return try given.compactMap { kind, items in
                guard let items else { return nil }
                do {
                    return (kind, try kind.storedValue(items))
                } catch {
                    throw ValidationError("\(error)")
                }
            }
        }

        func run() async throws {
            let values = try values()
            guard !values.isEmpty else { throw ValidationError("give at least one control") }
            let (redis, account, scope) = try await target.open(redisOptions, panKey)
            defer { redis.close() }
            if scope == .program {
                try await ProgramScope.change(redis) { controls in
                    for (kind, value) in values { controls[kind] = value }
                }
                print("controls of the program set: " + values.map { "\($0.0.rawValue)=\($0.1)" }.joined(separator: " "))
                return
            }
            let key = Keys.controls(account: account)
            if values.contains(where: { $0.0 == .rollingAmount || $0.0 == .rollingCount }) && !values.contains(where: { $0.0 == .rollingSeconds }) {
                let seconds = try await redis.send(RedisCommand("HGET", key, ControlKind.rollingSeconds.field(scope: scope)), key: key)
                guard seconds.string != nil else { throw ValidationError("--rolling-amount and --rolling-count need --rolling-seconds") }
            }
            _ = try await redis.send(RedisCommand(["HSET", key] + values.flatMap { [$0.0.field(scope: scope), $0.1] }), key: key)
            print("controls of \(scope == .account ? "account \(account)" : "card \(scope.name) (account \(account))") set: "
                + values.map { "\($0.0.rawValue)=\($0.1)" }.joined(separator: " "))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the controls of an account or a card and what the current windows have counted.")
        @OptionGroup var redisOptions: RedisOptions
        @OptionGroup var panKey: PANKeyOptions
        @OptionGroup var target: Target

        func run() async throws {
            let (redis, account, scope) = try await target.open(redisOptions, panKey)
            defer { redis.close() }
            if scope == .program {
                let controls = try await redis.rulesStore.load().get().programControls.values
                print(controls.isEmpty ? "no controls on the program" : "controls on the program (every account):\n"
                    + ControlsCommand.lines(ControlKind.allCases.map { ($0, controls[$0]) }).joined(separator: "\n"))
                print("  (counted per account: controls show --account ID)")
                return
            }
            let key = Keys.controls(account: account)
            let reply = try await redis.send(RedisCommand(["HMGET", key] + ControlKind.allCases.map { $0.field(scope: scope) }), key: key)
            let values = (reply.array ?? []).map(\.string)
            let lines = ControlsCommand.lines(Array(zip(ControlKind.allCases, values)))
            print(lines.isEmpty ? "no controls on \(scope.name) of account \(account)" : "controls on \(scope.name) of account \(account):\n" + lines.joined(separator: "\n"))
            let spentKey = Keys.spent(account: account)
            let windows = [("d", "day"), ("w", "week"), ("m", "month"), ("r", "trailing window")]
            let scopes = scope == .account ? ["account", "program"] : [scope.name]
            let fields = scopes.flatMap { name in windows.map { "\(name).\($0.0)" } }
            let spent = (try await redis.send(RedisCommand(["HMGET", spentKey] + fields), key: spentKey).array ?? []).map(\.string)
            for (index, value) in spent.enumerated() {
                let (name, window) = (scopes[index / windows.count], windows[index % windows.count].1)
                if index % windows.count == 3 {
                    let items = (value ?? "").split(separator: ",").compactMap { $0.split(separator: ":").last.flatMap { Int64($0) } }
                    if !items.isEmpty {
                        print("  in the trailing window\(name == "program" ? " for the program's limits" : "") (as of the last approval): \(Cents(items.reduce(0, +))) in \(items.count) approvals")
                    }
                    continue
                }
                let parts = (value ?? "").split(separator: ":").map(String.init)
                guard parts.count == 3, let cents = Int64(parts[1]) else { continue }
                print("  counted this \(window)\(name == "program" ? " for the program's limits" : "") (period \(parts[0])): \(Cents(cents)) in \(parts[2]) approvals")
            }
        }
    }

    /// "  kind: value" for the controls set (amounts in reais).
    static func lines(_ values: [(ControlKind, String?)]) -> [String] {
        values.compactMap { kind, value in
            value.map { "  \(kind.rawValue): " + (kind.isAmount ? Int64($0).map { Cents($0).description } ?? $0 : $0) }
        }
    }

    /// Changes the program's controls: the rules are read, changed and saved
    /// as a new rule set (serves pick it up within a second).
    enum ProgramScope {
        static func change(_ redis: RedisSession, _ edit: (inout [ControlKind: String]) -> Void) async throws {
            var rules = try await redis.rulesStore.load().get()
            var controls = rules.programControls.values
            edit(&controls)
            rules.programControls = ProgramControls(controls)
            let errors = rules.validationErrors()
            guard errors.isEmpty else { throw ValidationError(errors.joined(separator: "; ")) }
            try await redis.rulesStore.save(rules).get()
        }
    }

    struct Clear: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove every control of an account or a card.")
        @OptionGroup var redisOptions: RedisOptions
        @OptionGroup var panKey: PANKeyOptions
        @OptionGroup var target: Target

        func run() async throws {
            let (redis, account, scope) = try await target.open(redisOptions, panKey)
            defer { redis.close() }
            if scope == .program {
                try await ProgramScope.change(redis) { $0 = [:] }
                print("controls of the program cleared")
                return
            }
            let key = Keys.controls(account: account)
            let removed = try await redis.send(RedisCommand(["HDEL", key] + ControlKind.allCases.map { $0.field(scope: scope) }), key: key)
            print("controls of \(scope.name) on account \(account) cleared (\(removed.int ?? 0) removed)")
        }
    }
}
