import Foundation

/// One line of an employer's benefit order: credit `amount` to `category`
/// of `account`, identified within its order by `id`.
public struct OrderLine: Sendable, Equatable {
    public let id: String
    public let account: String
    public let category: String
    public let amount: Cents

    public init(id: String, account: String, category: String, amount: Cents) {
        self.id = id
        self.account = account
        self.category = category
        self.amount = amount
    }
}

/// A benefit order file, validated whole before anything is credited: CSV
/// (`line_id,account,category,amount`, an optional header line naming those
/// columns) or JSON lines (`{"line_id": …, "account": …, "category": …,
/// "amount": "500.00"}`). Amounts are decimal reais parsed exactly (never
/// through a floating-point number).
public enum OrderFile {
    public enum Format: String, Sendable { case csv, jsonl }

    /// A line refused, by its number in the file (from 1).
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public let lineNumber: Int
        public let reason: String
        public var description: String { "line \(lineNumber): \(reason)" }
    }

    /// The most lines one order holds, and the longest line.
    public static let maxLines = 1_000_000
    public static let maxLineLength = 1_024
    /// One order line never credits more than this (R$ 100.000,00).
    public static let maxAmount = Cents(10_000_000)

    public static func format(ofFile name: String) -> Format {
        let lower = name.lowercased()
        return lower.hasSuffix(".jsonl") || lower.hasSuffix(".ndjson") || lower.hasSuffix(".json") ? .jsonl : .csv
    }

    /// Every valid line, and every problem (a duplicate line id is a problem
    /// of its second occurrence).
    public static func parse(_ text: String, format: Format) -> (lines: [OrderLine], problems: [Problem]) {
        var lines: [OrderLine] = []
        var problems: [Problem] = []
        var seen: [String: Int] = [:]
        var number = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            let row = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if row.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            if number == 1 && format == .csv && row.lowercased().hasPrefix("line_id") { continue }
            guard lines.count + problems.count < maxLines else {
                problems.append(Problem(lineNumber: number, reason: "more than \(maxLines) lines in one order"))
                break
            }
            guard row.utf8.count <= maxLineLength else {
                problems.append(Problem(lineNumber: number, reason: "longer than \(maxLineLength) bytes"))
                continue
            }
            switch parseLine(String(row), format: format) {
            case .failure(let problem):
                problems.append(Problem(lineNumber: number, reason: problem.description))
            case .success(let line):
                if let first = seen[line.id] {
                    problems.append(Problem(lineNumber: number, reason: "line id \(line.id) already on line \(first)"))
                } else {
                    seen[line.id] = number
                    lines.append(line)
                }
            }
        }
        assert(lines.count == seen.count)
        return (lines, problems)
    }

    struct Reason: Error, CustomStringConvertible {
        let description: String
    }

    static func parseLine(_ row: String, format: Format) -> Result<OrderLine, Reason> {
        let fields: [String]
        switch format {
        case .csv:
            fields = row.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == 4 else { return .failure(Reason(description: "expected 4 fields (line_id,account,category,amount), found \(fields.count)")) }
        case .jsonl:
            guard let object = try? JSONSerialization.jsonObject(with: Data(row.utf8)) as? [String: Any] else {
                return .failure(Reason(description: "not a JSON object"))
            }
            var values: [String] = []
            for name in ["line_id", "account", "category", "amount"] {
                guard let value = object[name] else { return .failure(Reason(description: "no \(name)")) }
                if name == "amount", !(value is String) {
                    return .failure(Reason(description: "amount must be a string such as \"500.00\""))
                }
                values.append("\(value)")
            }
            fields = values
        }
        return validate(id: fields[0], account: fields[1], category: fields[2], amount: fields[3])
    }

    static func validate(id: String, account: String, category: String, amount: String) -> Result<OrderLine, Reason> {
        guard Identifier.isValid(id) else { return .failure(Reason(description: "line id \"\(id)\": 1-64 of A-Z a-z 0-9 . _ : -")) }
        guard Identifier.isValid(account) else { return .failure(Reason(description: "account \"\(account)\": 1-64 of A-Z a-z 0-9 . _ : -")) }
        guard CategoryName.isValid(category) else { return .failure(Reason(description: "category \"\(category)\": 1-32 of A-Z 0-9 _")) }
        switch Cents.parse(amount, limit: maxAmount) {
        case .success(let cents):
            return .success(OrderLine(id: id, account: account, category: category, amount: cents))
        case .failure(let error):
            return .failure(Reason(description: "\(error) (\"\(amount)\")"))
        }
    }
}
