import AuthorizerCore
import Foundation
import Ledger

/// What a webhook tells an issuer's backend about one ledger entry that
/// concerns the holder: the JSON body (documented in
/// `docs/webhooks/event.schema.json`), built once and signed as is.
///
/// The event id is the ledger's own address of the entry (`<stream>/<entry
/// id>`): unique, and the same on every re-delivery, so a receiver
/// deduplicates by it.
public struct WebhookEvent: Sendable, Equatable {
    /// The schema version of the body; bumped on any incompatible change.
    public static let apiVersion = "2026-12-01"

    public enum Kind: String, Sendable, CaseIterable, Codable {
        case authorizationApproved = "authorization.approved"
        /// 51 or 07, with its reason.
        case authorizationDeclined = "authorization.declined"
        /// A reversal that gave money back.
        case reversal = "reversal"
        /// Money added to the account's benefits by an operator or a load.
        case credit = "credit"
        /// A card issued, or its status changed (`card_status`, `card_status_before`).
        case cardStatus = "card.status"
    }

    public let id: String
    public let kind: Kind
    public let account: String
    /// When Redis wrote the ledger entry (ms since the epoch).
    public let createdMilliseconds: Int64
    /// The JSON body, exactly as signed and sent.
    public let body: [UInt8]

    /// The largest body an event may have (a ledger entry is a few hundred bytes).
    public static let maxBodyBytes = 16 * 1024

    /// nil when the entry concerns no holder: an operator's `set`, a refused
    /// reversal, a reversal that found nothing to give back.
    public init?(statement: Statement, stream: String) throws {
        guard let kind = Self.kind(of: statement) else { return nil }
        id = "\(stream)/\(statement.entryID)"
        self.kind = kind
        account = statement.account
        createdMilliseconds = Int64(statement.timestampMilliseconds)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        body = Array(try encoder.encode(Body(id: id, kind: kind, statement: statement)))
        precondition(body.count <= Self.maxBodyBytes, "a ledger entry makes a small event")
    }

    public static func kind(of statement: Statement) -> Kind? {
        switch statement.kind {
        case .authorization: return statement.code == .approved ? .authorizationApproved : .authorizationDeclined
        case .reversal: return statement.code == .approved && !statement.credits.isEmpty ? .reversal : nil
        case .credit: return .credit
        case .card: return .cardStatus
        case .set, .freeze, .revert: return nil
        }
    }

    /// The message the holder reads, in Brazilian Portuguese.
    static func text(_ statement: Statement) -> String {
        guard statement.kind == .credit else { return Notification(statement).text }
        let credits = statement.credits
        let total = Cents(credits.reduce(0) { $0 + $1.cents })
        let categories = credits.count == 1
            ? credits[0].category
            : credits.map { "\($0.category) \(BrazilianReal.format(Cents($0.cents)))" }.joined(separator: " + ")
        return "Crédito de \(BrazilianReal.format(total)) (\(categories))"
    }

    /// The body's fields. Every field is always present (null when it does not apply).
    struct Body: Encodable {
        let id: String
        let kind: Kind
        let statement: Statement

        enum Keys: String, CodingKey {
            case apiVersion = "api_version", eventID = "event_id", type, created, createdMs = "created_ms"
            case account, card, transactionID = "transaction_id", code, reason, amountCents = "amount_cents"
            case currency, merchant, mcc, category, debits, credits, balancesAfter = "balances_after"
            case originalTransactionID = "original_transaction_id", text
            case maskedPAN = "pan", cardStatus = "card_status", cardStatusBefore = "card_status_before"
        }

        struct Posting: Encodable {
            let category: String
            let cents: Int64
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            let milliseconds = Int64(statement.timestampMilliseconds)
            try container.encode(WebhookEvent.apiVersion, forKey: .apiVersion)
            try container.encode(id, forKey: .eventID)
            try container.encode(kind, forKey: .type)
            try container.encode(UTCTimestamp.iso8601(milliseconds: milliseconds), forKey: .created)
            try container.encode(milliseconds, forKey: .createdMs)
            try container.encode(statement.account, forKey: .account)
            try container.encode(statement.card.isEmpty ? nil : statement.card, forKey: .card)
            try container.encode(statement.maskedPAN.isEmpty ? nil : statement.maskedPAN, forKey: .maskedPAN)
            try container.encode(statement.to.isEmpty ? nil : statement.to, forKey: .cardStatus)
            try container.encode(statement.from.isEmpty ? nil : statement.from, forKey: .cardStatusBefore)
            try container.encode(statement.transactionID, forKey: .transactionID)
            try container.encode(statement.code.rawValue, forKey: .code)
            try container.encode(statement.reason.isEmpty ? nil : statement.reason, forKey: .reason)
            try container.encode(statement.kind == .credit ? statement.credits.reduce(0) { $0 + $1.cents } : statement.amount.value, forKey: .amountCents)
            try container.encode("BRL", forKey: .currency)
            let merchant = MerchantDescriptor(statement.merchant).name
            try container.encode(merchant.isEmpty ? nil : merchant, forKey: .merchant)
            try container.encode(statement.mcc.isEmpty ? nil : statement.mcc, forKey: .mcc)
            try container.encode(statement.category.isEmpty ? nil : statement.category, forKey: .category)
            try container.encode(statement.debits.map { Posting(category: $0.category, cents: $0.cents) }, forKey: .debits)
            try container.encode(statement.credits.map { Posting(category: $0.category, cents: $0.cents) }, forKey: .credits)
            try container.encode(Dictionary(statement.balances.map { ($0.category, $0.cents) }, uniquingKeysWith: { $1 }), forKey: .balancesAfter)
            try container.encode(statement.original.isEmpty ? nil : statement.original, forKey: .originalTransactionID)
            try container.encode(WebhookEvent.text(statement), forKey: .text)
        }
    }
}
