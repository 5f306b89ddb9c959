import Foundation

/// An independent model of the decision rules, written from docs/terminal-protocol.md
/// (L1, L2 whole|split, L3, idempotency, unknown accounts), not from the
/// server's code or replies. Tests replay their own requests through it and
/// compare every code, every debit and the final balances with what the
/// server did.
struct DecisionOracle {
    struct Outcome: Equatable, CustomStringConvertible {
        let code: String
        /// Category and cents, in the order the statement field (docs/redis-layout-and-locking.md) lists them.
        let debits: [Debit]

        var description: String { "\(code) [\(debits.map { "\($0.category):\($0.cents)" }.joined(separator: ","))]" }
        /// The statement's `debits` field for this outcome.
        var debitsField: String { debits.map { "\($0.category):\($0.cents)" }.joined(separator: ",") }
    }

    struct Debit: Equatable {
        let category: String
        let cents: Int64
    }

    /// docs/terminal-protocol.md, "Default rules".
    var mccCategories = ["5411": "FOOD", "5412": "FOOD", "5811": "MEAL", "5812": "MEAL"]
    var merchantMCCs = ["UBER EATS": "5812", "UBER TRIP": "4121", "PAG*JOSEDASILVA": "5812", "PICPAY*BILHETEUNICO": "4111"]
    var fallback = "CASH"
    var split = false

    private(set) var balances: [String: [String: Int64]]
    /// First outcome per (account, transaction id).
    private var seen: [String: Outcome] = [:]

    init(balances: [String: [String: Int64]]) {
        self.balances = balances
    }

    /// The decision for one valid request, applied to the model's balances.
    mutating func decide(id: String, account: String, cents: Int64, mcc: String, merchant: String) -> Outcome {
        precondition(cents > 0)
        guard var accountBalances = balances[account] else { return Outcome(code: "07", debits: []) }
        let key = "\(account)\u{0}\(id)"
        if let first = seen[key] { return Outcome(code: first.code, debits: []) }

        let category = mccCategories[effectiveMCC(mcc: mcc, merchant: merchant)] ?? fallback
        let categoryBalance = accountBalances[category] ?? 0
        let fallbackBalance = accountBalances[fallback] ?? 0
        var debits: [Debit] = []
        if categoryBalance >= cents {
            debits = [Debit(category: category, cents: cents)]
        } else if category != fallback {
            if split {
                let fromCategory = max(0, categoryBalance)
                if fallbackBalance >= cents - fromCategory {
                    debits = fromCategory == 0
                        ? [Debit(category: fallback, cents: cents)]
                        : [Debit(category: category, cents: fromCategory), Debit(category: fallback, cents: cents - fromCategory)]
                }
            } else if fallbackBalance >= cents {
                debits = [Debit(category: fallback, cents: cents)]
            }
        }
        for debit in debits { accountBalances[debit.category, default: 0] -= debit.cents }
        balances[account] = accountBalances
        let outcome = Outcome(code: debits.isEmpty ? "51" : "00", debits: debits)
        seen[key] = outcome
        return outcome
    }

    /// L3: the merchant descriptor overrides the mcc.
    func effectiveMCC(mcc: String, merchant: String) -> String {
        if let mapped = merchantMCCs[Self.normalize(merchant)] { return mapped }
        if merchant.count == 40, let mapped = merchantMCCs[Self.normalize(String(merchant.prefix(25)))] { return mapped }
        return mcc
    }

    /// Uppercase, runs of whitespace collapsed to one space, trimmed.
    static func normalize(_ text: String) -> String {
        text.uppercased().split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
    }

    /// "12.34" for 1234 cents.
    static func amount(_ cents: Int64) -> String {
        let remainder = cents % 100
        return "\(cents / 100).\(remainder < 10 ? "0" : "")\(remainder)"
    }
}
