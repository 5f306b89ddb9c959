import AuthorizerCore
import Ledger
import RedisWire

/// Statements into SQLite, exactly once by entry id.
final class StatementStoreSink: EntrySink {
    private let store: StatementStore
    private let group: String
    private let consumer: String

    init(store: StatementStore, group: String, consumer: String) {
        self.store = store
        self.group = group
        self.consumer = consumer
    }

    func apply(_ batches: [(stream: String, entries: [StreamEntry])]) async throws -> BatchOutcome {
        try await store.apply(batches, group: group, consumer: consumer)
    }
}

/// One notification per decision, appended to the account's capped
/// `notifications:{ID}` stream (on the account's slot, with `account:{ID}`).
/// At least once: a batch re-delivered after a crash notifies again, with
/// the same `statement` field for the client to dedupe on.
final class NotificationSink: EntrySink {
    private let ledger: LedgerClient
    private let maxLength: Int

    init(ledger: LedgerClient, maxLength: Int) {
        precondition(maxLength > 0)
        self.ledger = ledger
        self.maxLength = maxLength
    }

    func apply(_ batches: [(stream: String, entries: [StreamEntry])]) async throws -> BatchOutcome {
        var commands: [(key: String, arguments: [String])] = []
        var total = 0
        for (_, entries) in batches {
            total += entries.count
            for entry in entries {
                guard let statement = try? Statement(entry: entry), Notification.isNotified(statement) else { continue }
                let key = Keys.notifications(statement.account)
                commands.append((key, ["XADD", key, "MAXLEN", "~", String(maxLength), "*"] + Notification(statement).fields.flatMap { [$0.0, $0.1] }))
            }
        }
        // Every XADD succeeds or the batch is not acknowledged and comes back;
        // Redis errors surface to the consumer's retry.
        _ = try await ledger.pipeline(commands)
        return BatchOutcome(applied: commands.count, skipped: total - commands.count)
    }
}

/// The message an account holder sees for one decision, in Brazilian Portuguese.
public struct Notification: Sendable, Equatable {
    public let statementID: StreamID
    public let transactionID: String
    public let code: ResponseCode
    public let amount: Cents
    public let text: String

    /// Decisions are notified, reversals that gave money back, a card's
    /// status changes, an account frozen or unfrozen and a benefit order's
    /// credits; operator balance changes and reversals that moved nothing
    /// are not.
    public static func isNotified(_ statement: Statement) -> Bool {
        switch statement.kind {
        case .authorization, .card, .freeze: return true
        case .revert: return statement.amount.value > 0
        case .reversal: return statement.code == .approved && !statement.credits.isEmpty
        case .credit: return !statement.order.isEmpty
        case .set: return false
        }
    }

    /// A benefit category in the holder's words.
    static func categoryText(_ category: String) -> String {
        switch category {
        case "MEAL": return "Refeição"
        case "FOOD": return "Alimentação"
        case "CASH": return "Saldo livre"
        default: return category
        }
    }

    /// A card's status in the holder's words.
    static func cardStatusText(_ status: String) -> String {
        switch CardStatus(rawValue: status) {
        case .pending?: return "emitido, aguardando ativação"
        case .active?: return "ativo"
        case .blocked?: return "bloqueado"
        case .lost?: return "bloqueado por perda"
        case .stolen?: return "bloqueado por roubo"
        case .cancelled?: return "cancelado"
        case nil: return status
        }
    }

    /// The words of a card refusal, as the holder reads them.
    static func cardRefusalText(_ refusal: CardRefusal) -> String {
        switch refusal {
        case .unknown, .otherAccount: return "cartão não reconhecido"
        case .pending: return "cartão não ativado"
        case .blocked: return "cartão bloqueado"
        case .lost: return "cartão bloqueado por perda"
        case .stolen: return "cartão bloqueado por roubo"
        case .cancelled: return "cartão cancelado"
        case .expired: return "cartão vencido"
        case .expiryMismatch: return "validade do cartão não confere"
        }
    }

    /// The words of a spending control's refusal, as the holder reads them.
    static func controlRefusalText(_ refusal: ControlRefusal) -> String {
        switch refusal {
        case .perTransaction: return "valor acima do limite por compra"
        case .dailyAmount: return "limite diário atingido"
        case .weeklyAmount: return "limite semanal atingido"
        case .monthlyAmount: return "limite mensal atingido"
        case .dailyCount: return "número de compras do dia atingido"
        case .weeklyCount: return "número de compras da semana atingido"
        case .monthlyCount: return "número de compras do mês atingido"
        case .rollingAmount: return "limite de gastos do período atingido"
        case .rollingCount: return "muitas compras em pouco tempo"
        case .merchantCategory: return "tipo de estabelecimento não permitido"
        case .merchant: return "estabelecimento não permitido"
        case .frozen: return "conta bloqueada"
        }
    }

    public init(_ statement: Statement) {
        precondition(Self.isNotified(statement))
        statementID = statement.entryID
        transactionID = statement.transactionID
        code = statement.code
        amount = statement.amount
        let merchant = MerchantDescriptor(statement.merchant).name
        let value = BrazilianReal.format(statement.amount)
        if statement.kind == .card {
            let card = statement.maskedPAN.isEmpty ? statement.card : "final \(statement.maskedPAN.suffix(4))"
            text = statement.from.isEmpty
                ? "Cartão \(card) emitido: \(Self.cardStatusText(statement.to))"
                : "Cartão \(card) \(Self.cardStatusText(statement.to))"
            return
        }
        if statement.kind == .credit {
            text = "Crédito de " + statement.credits.map { "\(BrazilianReal.format(Cents($0.cents))) em \(Self.categoryText($0.category))" }.joined(separator: " e ")
            return
        }
        if statement.kind == .revert {
            text = "Estorno de crédito de \(value) em \(Self.categoryText(statement.debits.first?.category ?? ""))"
            return
        }
        if statement.kind == .freeze {
            text = statement.to == "frozen" ? "Conta bloqueada: compras suspensas" : "Conta desbloqueada: compras liberadas"
            return
        }
        if statement.kind == .reversal {
            text = merchant.isEmpty ? "Estorno de \(value)" : "Estorno de \(value) em \(merchant)"
            return
        }
        switch statement.code {
        case .approved:
            let categories = statement.debits.count == 1
                ? statement.debits[0].category
                : statement.debits.map { "\($0.category) \(BrazilianReal.format(Cents($0.cents)))" }.joined(separator: " + ")
            text = "Compra aprovada de \(value) em \(merchant) (\(categories))"
        case .insufficientFunds:
            text = "Compra recusada de \(value) em \(merchant): saldo insuficiente"
        case .rejected:
            if let refusal = CardRefusal(rawValue: statement.reason) {
                text = "Compra recusada de \(value) em \(merchant): \(Self.cardRefusalText(refusal))"
                return
            }
            if let refusal = ControlRefusal(rawValue: statement.reason) {
                text = "Compra recusada de \(value) em \(merchant): \(Self.controlRefusalText(refusal))"
                return
            }
            let reason = statement.reason.isEmpty ? "" : " (\(statement.reason))"
            text = "Compra recusada de \(value) em \(merchant): transação não autorizada\(reason)"
        }
    }

    /// The fields of the notification stream entry.
    public var fields: [(String, String)] {
        [
            ("statement", statementID.description), ("id", transactionID), ("code", code.rawValue),
            ("amount", String(amount.value)), ("text", text),
        ]
    }
}

/// `R$ 1.234,56`.
public enum BrazilianReal {
    public static func format(_ amount: Cents) -> String {
        let magnitude = amount.value.magnitude
        var units = String(magnitude / 100)
        var grouped = ""
        while units.count > 3 {
            grouped = "." + units.suffix(3) + grouped
            units.removeLast(3)
        }
        let cents = magnitude % 100
        return "\(amount.value < 0 ? "-" : "")R$ \(units)\(grouped),\(cents < 10 ? "0" : "")\(cents)"
    }
}
