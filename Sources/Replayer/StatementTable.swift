import AuthorizerCore
import Foundation

/// An account's statement (extrato) as a plain-text table, newest first.
public enum StatementTable {
    public static func render(account: String, statements: [Statement], total: Int) -> String {
        var lines = ["Statement of account \(account): \(statements.count) most recent of \(total), newest first", ""]
        let rows = statements.map(row)
        let header = ["WHEN (UTC)", "DESCRIPTION", "AMOUNT", "CODE", "BALANCES AFTER", "ENTRY"]
        let rightAligned: Set<Int> = [2]
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        widths[1] = min(widths[1], 48)
        func format(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                let text = cell.count > widths[index] ? String(cell.prefix(widths[index] - 1)) + "…" : cell
                let padding = String(repeating: " ", count: widths[index] - text.count)
                return rightAligned.contains(index) ? padding + text : text + padding
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        lines.append(format(header))
        lines += rows.map(format)
        if statements.isEmpty { lines.append("(no statements)") }
        return lines.joined(separator: "\n")
    }

    static func row(_ statement: Statement) -> [String] {
        let when = utcTimestamp(milliseconds: statement.timestampMilliseconds)
        let description: String
        let amount: String
        switch statement.kind {
        case .authorization:
            let merchant = MerchantDescriptor(statement.merchant).name
            switch statement.code {
            case .approved:
                description = "\(merchant) (\(statement.debits.map(\.category).joined(separator: "+")))"
                amount = "-\(statement.amount)"
            case .insufficientFunds:
                description = "\(merchant): declined, insufficient funds"
                amount = "\(statement.amount)"
            case .rejected:
                description = "\(merchant): rejected, \(statement.reason)"
                amount = "\(statement.amount)"
            }
        case .credit:
            description = "credit " + statement.credits.map { "\($0.category) +\(Cents($0.cents))" }.joined(separator: ", ")
            amount = "+\(Cents(statement.credits.reduce(0) { $0 + $1.cents }))"
        case .reversal:
            let merchant = MerchantDescriptor(statement.merchant).name
            let subject = "reversal of \(statement.original)" + (merchant.isEmpty ? "" : " at \(merchant)")
            if statement.code == .approved && !statement.credits.isEmpty {
                description = subject + " (" + statement.credits.map(\.category).joined(separator: "+") + ")"
                amount = "+\(statement.amount)"
            } else {
                description = subject + (statement.reason.isEmpty ? "" : ": \(statement.reason)")
                amount = ""
            }
        case .card:
            let card = statement.maskedPAN.isEmpty ? statement.card : statement.maskedPAN
            description = statement.from.isEmpty
                ? "card \(card) issued, \(statement.to)"
                : "card \(card) \(statement.from) -> \(statement.to)"
            amount = ""
        case .revert:
            description = "order \(statement.order) line \(statement.orderLine) reverted (\(statement.reason))"
            amount = "-\(statement.amount)"
        case .freeze:
            description = (statement.to == "frozen" ? "account frozen" : "account unfrozen") + (statement.reason.isEmpty ? "" : ": \(statement.reason)")
            amount = ""
        case .set:
            description = "balance set " + statement.credits.map { "\($0.category)=\(Cents($0.cents))" }.joined(separator: ", ")
            amount = ""
        }
        let balances = statement.balances.map { "\($0.category) \(Cents($0.cents))" }.joined(separator: ", ")
        return [when, description, amount, statement.code.rawValue, balances, statement.entryID.description]
    }

    /// `2024-05-01 12:00:01.234`, in UTC.
    static func utcTimestamp(milliseconds: UInt64) -> String {
        var seconds = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d.%03d",
            parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
            Int32(milliseconds % 1000)
        )
    }
}
