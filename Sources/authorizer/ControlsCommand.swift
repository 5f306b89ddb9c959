import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation
import RedisWire

struct ControlsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controls",
        abstract: "Set, show and clear the spending controls of an account or a card (checked with the debit).",
        subcommands: [Set.self, Show.self, Clear.self]
    )

    /// The account, or a card (by id or PAN) and its account.
    struct Target: ParsableArguments {
        @Option(help: "The account's own controls (every card of it).") var account: String?
        @Option(help: "One card's controls (card id or PAN).") var card: String?

        func resolve(_ redis: RedisSession, keys: PANKeys?) async throws -> (account: String, scope: ControlScope) {
            guard (account == nil) != (card == nil) else { throw ValidationError("give --account or --card") }
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
        @Option(help: "MCCs refused, comma-separated (7995,5933).") var blockedMcc: String?
        @Option(help: "A merchant refused (its descriptor as terminals send it); repeatable.") var blockedMerchant: [String] = []

        func values() throws -> [(ControlKind, String)] {
            var values: [(ControlKind, String)] = []
            for (kind, text) in [(ControlKind.perTransaction, perTransaction), (.dayAmount, dailyAmount), (.weekAmount, weeklyAmount), (.monthAmount, monthlyAmount)] {
                guard let text else { continue }
                guard case .success(let cents) = Cents.parse(text) else { throw ValidationError("--\(kind.rawValue): a positive amount such as 150.00") }
                values.append((kind, String(cents.value)))
            }
            for (kind, count) in [(ControlKind.dayCount, dailyCount), (.weekCount, weeklyCount), (.monthCount, monthlyCount)] {
                guard let count else { continue }
                guard (1...1_000_000).contains(count) else { throw ValidationError("--\(kind.rawValue): a count from 1 to 1000000") }
                values.append((kind, String(count)))
            }
            if let blockedMcc {
                let codes = blockedMcc.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                guard !codes.isEmpty, codes.count <= ControlKind.maxListItems, codes.allSatisfy({ $0.utf8.count == 4 && $0.allSatisfy(\.isASCII) && Int($0) != nil }) else {
                    throw ValidationError("--blocked-mcc: up to \(ControlKind.maxListItems) four-digit MCCs, comma-separated")
                }
                values.append((.blockedMCC, codes.joined(separator: ",")))
            }
            if !blockedMerchant.isEmpty {
                guard blockedMerchant.count <= ControlKind.maxListItems else { throw ValidationError("--blocked-merchant: at most \(ControlKind.maxListItems)") }
                values.append((.blockedMerchant, blockedMerchant.map { MerchantDescriptor($0).digest }.joined(separator: ",")))
            }
            return values
        }

        func run() async throws {
            let values = try values()
            guard !values.isEmpty else { throw ValidationError("give at least one control") }
            let (redis, account, scope) = try await target.open(redisOptions, panKey)
            defer { redis.close() }
            let key = Keys.controls(account: account)
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
            let key = Keys.controls(account: account)
            let reply = try await redis.send(RedisCommand(["HMGET", key] + ControlKind.allCases.map { $0.field(scope: scope) }), key: key)
            let values = (reply.array ?? []).map(\.string)
            var lines: [String] = []
            for (kind, value) in zip(ControlKind.allCases, values) {
                guard let value else { continue }
                lines.append("  \(kind.rawValue): " + (kind.isAmount ? Int64(value).map { Cents($0).description } ?? value : value))
            }
            print(lines.isEmpty ? "no controls on \(scope.name) of account \(account)" : "controls on \(scope.name) of account \(account):\n" + lines.joined(separator: "\n"))
            let spentKey = Keys.spent(account: account)
            let windows = [("d", "day"), ("w", "week"), ("m", "month")]
            let spent = (try await redis.send(RedisCommand(["HMGET", spentKey] + windows.map { "\(scope.name).\($0.0)" }), key: spentKey).array ?? []).map(\.string)
            for ((_, name), value) in zip(windows, spent) {
                let parts = (value ?? "").split(separator: ":").map(String.init)
                guard parts.count == 3, let cents = Int64(parts[1]) else { continue }
                print("  counted this \(name) (period \(parts[0])): \(Cents(cents)) in \(parts[2]) approvals")
            }
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
            let key = Keys.controls(account: account)
            let removed = try await redis.send(RedisCommand(["HDEL", key] + ControlKind.allCases.map { $0.field(scope: scope) }), key: key)
            print("controls of \(scope.name) on account \(account) cleared (\(removed.int ?? 0) removed)")
        }
    }
}
