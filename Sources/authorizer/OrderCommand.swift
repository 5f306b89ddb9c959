import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation
import RedisWire

struct OrderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order",
        abstract: "Employers' benefit orders: credit every line of a file at most once, ever.",
        subcommands: [Load.self, Revert.self]
    )

    /// Why an order line may be reverted: an operational error, nothing else.
    enum RevertReason: String, ExpressibleByArgument, CaseIterable {
        case duplicate
        case wrongBeneficiary = "wrong-beneficiary"
        case overCredit = "over-credit"
    }

    struct Revert: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Debit back one credited order line (an operational error only): at most what is unspent, once.",
            discussion: "The line stays credited for its order: sending the order again credits nothing."
        )
        @OptionGroup var redisOptions: RedisOptions
        @OptionGroup var who: ChangeAuthor
        @Option(help: "The order's id.") var order: String
        @Option(help: "The line's id in the order.") var line: String
        @Option(help: "The account the line credited (the results file of order load lists it).") var account: String
        @Option(help: "duplicate, wrong-beneficiary or over-credit.") var reason: RevertReason

        func validate() throws {
            for (name, value) in [("--order", order), ("--line", line), ("--account", account)] where !Identifier.isValid(value) {
                throw ValidationError("\(name): 1-64 characters of A-Z a-z 0-9 . _ : -")
            }
        }

        func run() async throws {
            let scripts = try ScriptLibrary.load()
            let redis = try await RedisSession.open(redisOptions, scripts: scripts.all)
            defer { redis.close() }
            let operation = "revert-\(UInt64(Date().timeIntervalSince1970 * 1000))-\(UInt32.random(in: .min ... .max))"
            let call = ScriptCall.revert(order: order, line: line, account: account, reason: reason.rawValue, by: who.name,
                                         operation: operation, statements: redis.target.statementsKey(forAccount: account))
            let reply = try await redis.eval(scripts[call.script], keys: call.keys, arguments: call.arguments)
            let items = (reply.array ?? []).map { $0.string ?? "" }
            switch (items.first, items.count) {
            case ("REVERTED", 4):
                print("order \(order) line \(line) reverted on account \(account): \(Cents(Int64(items[2]) ?? 0)) debited back (balance \(Cents(Int64(items[3]) ?? 0)))")
            case ("ALREADY", 3):
                print("order \(order) line \(line) already reverted (\(Cents(Int64(items[2]) ?? 0)) debited back then)")
            case ("UNKNOWN", 1):
                throw fail("order \(order) line \(line): not credited on account \(account)")
            default:
                throw RedisError.unexpectedReply("\(reply)")
            }
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Credit an order file (CSV or JSON lines), each line at most once for this order id.",
            discussion: """
                The file is validated whole first: with a bad line nothing is credited (unless --skip-invalid). \
                Loading the same order again credits nothing new and reports each line's first result; a line \
                credited before with another body is refused. Lines: line_id,account,category,amount (reais, 500.00).
                """
        )
        @OptionGroup var redisOptions: RedisOptions
        @Argument(help: "The order file: .csv, or .jsonl / .json for JSON lines.") var file: String
        @Option(help: "The order's id (1-64 of A-Z a-z 0-9 . _ : -): with the line id, what makes a credit happen once.") var order: String
        @Option(help: "The employer's id, recorded with each credit.") var employer: String = ""
        @Flag(help: "Credit the valid lines even when some are invalid (those are listed and skipped).") var skipInvalid = false
        @Option(help: "Write every line's result to this file (CSV: line_number,line_id,account,result,detail).") var results: String?
        @Option(help: "Days an order can be sent again and credit nothing (its lines' records are kept that long).") var retentionDays: Int = 396
        @Option(help: "Credits in flight at once (pipelined).") var window: Int = 256

        func validate() throws {
            guard Identifier.isValid(order) else { throw ValidationError("--order: 1-64 characters of A-Z a-z 0-9 . _ : -") }
            guard employer.isEmpty || Identifier.isValid(employer) else { throw ValidationError("--employer: 1-64 characters of A-Z a-z 0-9 . _ : -") }
            guard (1...3_650).contains(retentionDays) else { throw ValidationError("--retention-days: 1 to 3650") }
            guard (1...4_096).contains(window) else { throw ValidationError("--window: 1 to 4096") }
        }

        func run() async throws {
            let text = try readTextFile(file)
            let (lines, problems) = OrderFile.parse(text, format: OrderFile.format(ofFile: file))
            for problem in problems.prefix(50) { FileHandle.standardError.write(Data("\(file): \(problem)\n".utf8)) }
            if problems.count > 50 { FileHandle.standardError.write(Data("\(file): … and \(problems.count - 50) more\n".utf8)) }
            if !problems.isEmpty && !skipInvalid {
                throw fail("\(problems.count) invalid lines: nothing credited (fix them, or --skip-invalid)")
            }
            let scripts = try ScriptLibrary.load()
            let redis = try await RedisSession.open(redisOptions, scripts: scripts.all)
            defer { redis.close() }
            let outcomes = try await credit(lines, redis: redis, scripts: scripts)
            let summary = OrderSummary(outcomes: outcomes, invalid: problems.count)
            if let results { try writeResults(results, lines: lines, outcomes: outcomes, problems: problems) }
            print(summary.text(order: order))
            if summary.failed > 0 { throw ExitCode(1) }
        }

        /// Every line through credit.lua, `window` calls in flight at once.
        func credit(_ lines: [OrderLine], redis: RedisSession, scripts: ScriptLibrary) async throws -> [OrderOutcome] {
            let progress = Progress(total: lines.count)
            let retention = Int64(retentionDays) * 86_400
            var outcomes = [OrderOutcome?](repeating: nil, count: lines.count)
            try await withThrowingTaskGroup(of: (Int, OrderOutcome).self) { group in
                var next = 0
                func start() {
                    let index = next
                    let line = lines[index]
                    next += 1
                    let call = ScriptCall.credit(line, order: order, employer: employer, retentionSeconds: retention,
                                                 statements: redis.target.statementsKey(forAccount: line.account))
                    group.addTask { (index, OrderOutcome(try await redis.eval(scripts[call.script], keys: call.keys, arguments: call.arguments))) }
                }
                while next < min(window, lines.count) { start() }
                while let (index, outcome) = try await group.next() {
                    outcomes[index] = outcome
                    progress.advance()
                    if next < lines.count { start() }
                }
            }
            progress.finish()
            return outcomes.map { $0! }
        }

        func writeResults(_ path: String, lines: [OrderLine], outcomes: [OrderOutcome], problems: [OrderFile.Problem]) throws {
            var text = "line_id,account,result,detail\n"
            for (line, outcome) in zip(lines, outcomes) {
                text += "\(line.id),\(line.account),\(outcome.result),\(outcome.detail)\n"
            }
            for problem in problems { text += ",,invalid,\"\(problem.description.replacingOccurrences(of: "\"", with: "'"))\"\n" }
            do {
                try text.write(toFile: path, atomically: true, encoding: .utf8)
            } catch {
                throw fail("cannot write \(path): \(error.localizedDescription)")
            }
        }
    }
}

/// What credit.lua did with one line.
enum OrderOutcome: Equatable {
    case credited(entry: String)
    case already(entry: String)
    case conflict(previous: String)
    case unknownAccount
    case failed(String)

    init(_ reply: RESPValue) {
        let items = (reply.array ?? []).map { $0.string ?? "" }
        switch (items.first, items.count) {
        case ("CREDITED", 3): self = .credited(entry: items[1])
        case ("ALREADY", 2): self = .already(entry: items[1])
        case ("CONFLICT", 2): self = .conflict(previous: items[1])
        case ("UNKNOWN", 1): self = .unknownAccount
        default: self = .failed("\(reply)")
        }
    }

    var result: String {
        switch self {
        case .credited: return "credited"
        case .already: return "already credited"
        case .conflict: return "refused: credited before with another body"
        case .unknownAccount: return "failed: unknown account"
        case .failed: return "failed"
        }
    }

    var detail: String {
        switch self {
        case .credited(let entry), .already(let entry): return entry
        case .conflict(let previous): return previous
        case .unknownAccount: return ""
        case .failed(let why): return "\"\(why.replacingOccurrences(of: "\"", with: "'"))\""
        }
    }
}

struct OrderSummary {
    var credited = 0, already = 0, conflicts = 0, unknown = 0, errors = 0, invalid = 0

    init(outcomes: [OrderOutcome], invalid: Int) {
        self.invalid = invalid
        for outcome in outcomes {
            switch outcome {
            case .credited: credited += 1
            case .already: already += 1
            case .conflict: conflicts += 1
            case .unknownAccount: unknown += 1
            case .failed: errors += 1
            }
        }
    }

    var failed: Int { conflicts + unknown + errors }

    func text(order: String) -> String {
        var parts = ["order \(order): \(credited) credited", "\(already) already credited"]
        if conflicts > 0 { parts.append("\(conflicts) refused (credited before with another body)") }
        if unknown > 0 { parts.append("\(unknown) failed: unknown account") }
        if errors > 0 { parts.append("\(errors) failed: Redis error") }
        if invalid > 0 { parts.append("\(invalid) invalid, skipped") }
        return parts.joined(separator: ", ")
    }
}

/// A progress line on a terminal (stderr), every 1 % of the lines.
final class Progress: @unchecked Sendable {
    private let total: Int
    private var done = 0
    private let shown = isatty(STDERR_FILENO) != 0

    init(total: Int) { self.total = total }

    func advance() {
        done += 1
        guard shown, total > 0, done % max(1, total / 100) == 0 else { return }
        FileHandle.standardError.write(Data("\r\(done)/\(total) lines (\(done * 100 / total) %)".utf8))
    }

    func finish() {
        if shown && total > 0 { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
