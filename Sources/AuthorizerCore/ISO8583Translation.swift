/// What the ISO 8583 port asks of the authorizer, and how its decisions are
/// answered: the translation between ISO 8583 messages and the service's own
/// requests and decisions. No decision is taken here.
public enum ISO8583Operation: Sendable, Equatable {
    /// What the terminal port would ask: the same request, the same decision.
    case request(TerminalRequest)
    /// 0800 with DE70 `301`: answered 0810 `00` without touching Redis.
    case echo
}

/// A message answered without asking the authorizer: DE39 and why.
public struct ISO8583Refusal: Error, Sendable, Equatable {
    public let code: String
    public let reason: String

    public init(_ code: String, _ reason: String) {
        self.code = code
        self.reason = reason
    }
}

/// DE39 values used by the ISO 8583 port.
public enum ISO8583ResponseCode {
    public static let approved = "00"
    public static let doNotHonour = "05"
    public static let invalidTransaction = "12"
    public static let invalidAmount = "13"
    public static let invalidCard = "14"
    public static let formatError = "30"
    public static let insufficientFunds = "51"
    public static let lostCard = "41"
    public static let stolenCard = "43"
    public static let cancelledCard = "46"
    public static let expiredCard = "54"
    public static let blockedCard = "62"
    public static let notPermitted = "57"
    public static let overAmountLimit = "61"
    public static let overCountLimit = "65"
    public static let issuerUnavailable = "91"
}

public enum ISO8583Translator {
    /// The only transaction currency accepted (DE49): Brazilian real.
    public static let currency = "986"
    /// Fields every answer copies from its request when present.
    public static let echoedFields = [2, 3, 4, 7, 11, 37, 41, 42]
    /// DE54 holds at most 240 characters: 12 blocks of 20.
    public static let maxBalanceBlocks = 12

    /// Account type codes of DE54 per benefit category; any other category is `99`.
    public static let accountTypes: [String: String] = ["CASH": "00", "FOOD": "01", "MEAL": "02"]
    public static let otherAccountType = "99"

    typealias R = ISO8583ResponseCode

    /// Reads a decoded request: what to ask the authorizer, or the answer code at once.
    public static func interpret(_ message: ISO8583.Message) -> Result<ISO8583Operation, ISO8583Refusal> {
        func refuse(_ code: String, _ reason: String) -> Result<ISO8583Operation, ISO8583Refusal> {
            .failure(ISO8583Refusal(code, reason))
        }
        guard let stan = message[11], isDigits(stan) else { return refuse(R.formatError, "DE11 (STAN) must be 6 digits") }
        switch message.mti {
        case "0800":
            guard let code = message[70] else { return refuse(R.formatError, "DE70 is missing") }
            guard code == "301" else { return refuse(R.invalidTransaction, "only DE70 301 (echo test) is served") }
            return .success(.echo)
        case "0100", "0101", "0200", "0201":
            return interpretFinancial(message, stan: stan)
        case "0400", "0401", "0420", "0421":
            return interpretReversal(message, stan: stan)
        default:
            return refuse(R.invalidTransaction, "MTI \(message.mti) is not served")
        }
    }

    private static func interpretFinancial(_ message: ISO8583.Message, stan: String) -> Result<ISO8583Operation, ISO8583Refusal> {
        func refuse(_ code: String, _ reason: String) -> Result<ISO8583Operation, ISO8583Refusal> {
            .failure(ISO8583Refusal(code, reason))
        }
        let common: (account: String, pan: PAN?, rrn: String)
        switch accountAndRRN(message) {
        case .success(let value): common = value
        case .failure(let refusal): return .failure(refusal)
        }
        guard let processing = message[3], isDigits(processing) else { return refuse(R.formatError, "DE3 must be 6 digits") }
        if let currency = message[49] {
            guard isDigits(currency) else { return refuse(R.formatError, "DE49 must be 3 digits") }
            guard currency == Self.currency else { return refuse(R.invalidTransaction, "currency \(currency) is not served (986 only)") }
        }
        switch processing.prefix(2) {
        case "31":
            if let amount = message[4], !isDigits(amount) { return refuse(R.formatError, "DE4 must be 12 digits") }
            var inquiry = BalanceInquiry(id: common.rrn, account: "", card: common.pan.map(CardReference.pan))
            inquiry.accountIfNoCard = common.account
            return .success(.request(.balance(inquiry)))
        case "00":
            guard let amountText = message[4] else { return refuse(R.formatError, "DE4 (amount) is missing") }
            guard isDigits(amountText), let cents = Int64(amountText) else { return refuse(R.formatError, "DE4 must be 12 digits") }
            guard cents > 0 else { return refuse(R.invalidAmount, "DE4 must be more than zero") }
            guard message[49] != nil else { return refuse(R.formatError, "DE49 (currency) is missing") }
            guard let mcc = message[18], MCC.isValid(mcc) else { return refuse(R.formatError, "DE18 (MCC) must be 4 digits") }
            guard let merchant = message[43] else { return refuse(R.formatError, "DE43 (card acceptor name/location) is missing") }
            guard merchant.contains(where: { $0 != " " }) else { return refuse(R.formatError, "DE43 must not be blank") }
            var request = TransactionRequest(
                id: common.rrn, account: "", amount: Cents(cents), mcc: mcc, merchant: merchant, card: common.pan.map(CardReference.pan)
            )
            request.accountIfNoCard = common.account
            if let expiry = message[14] {
                guard CardExpiry(expiry) != nil else { return refuse(R.formatError, "DE14 (expiry) must be YYMM") }
                request.cardExpiry = expiry
            }
            request.statementFields = statementFields(message, stan: stan, rrn: common.rrn)
            return .success(.request(.authorization(request)))
        default:
            return refuse(R.invalidTransaction, "processing code \(processing) is not served (00xxxx purchase, 31xxxx balance inquiry)")
        }
    }

    private static func interpretReversal(_ message: ISO8583.Message, stan: String) -> Result<ISO8583Operation, ISO8583Refusal> {
        func refuse(_ code: String, _ reason: String) -> Result<ISO8583Operation, ISO8583Refusal> {
            .failure(ISO8583Refusal(code, reason))
        }
        let common: (account: String, pan: PAN?, rrn: String)
        switch accountAndRRN(message) {
        case .success(let value): common = value
        case .failure(let refusal): return .failure(refusal)
        }
        if let processing = message[3] {
            guard isDigits(processing) else { return refuse(R.formatError, "DE3 must be 6 digits") }
            guard processing.hasPrefix("00") else { return refuse(R.invalidTransaction, "only purchases (DE3 00xxxx) are reversed") }
        }
        if let currency = message[49] {
            guard isDigits(currency) else { return refuse(R.formatError, "DE49 must be 3 digits") }
            guard currency == Self.currency else { return refuse(R.invalidTransaction, "currency \(currency) is not served (986 only)") }
        }
        var amount: Cents?
        if let amountText = message[4] {
            guard isDigits(amountText), let cents = Int64(amountText) else { return refuse(R.formatError, "DE4 must be 12 digits") }
            if cents > 0 { amount = Cents(cents) }  // zero: not checked against the original
        }
        if let original = message[90] {
            // MTI (4), STAN (6), transmission date/time (10), acquirer (11), forwarder (11).
            guard isDigits(original) else { return refuse(R.formatError, "DE90 must be 42 digits") }
            guard ["0100", "0101", "0200", "0201"].contains(String(original.prefix(4))) else {
                return refuse(R.formatError, "DE90 must name an original 0100 or 0200")
            }
        }
        var mcc: String?
        if let given = message[18] {
            guard MCC.isValid(given) else { return refuse(R.formatError, "DE18 (MCC) must be 4 digits") }
            mcc = given
        }
        // The reversal's own id: derived from the original's, so that a 0401
        // repeat (or a second 0400) is recognised as the same reversal.
        var request = ReversalRequest(
            id: "iso-rev:" + common.rrn, account: "", original: common.rrn, amount: amount, mcc: mcc, card: common.pan.map(CardReference.pan)
        )
        request.accountIfNoCard = common.account
        request.statementFields = statementFields(message, stan: stan, rrn: common.rrn)
        return .success(.request(.reversal(request)))
    }

    /// DE2 as an account id (used only with `--iso-pan-as-account` when it names no card), as a PAN when it is one, and DE37.
    private static func accountAndRRN(_ message: ISO8583.Message) -> Result<(account: String, pan: PAN?, rrn: String), ISO8583Refusal> {
        guard let pan = message[2] else { return .failure(ISO8583Refusal(R.formatError, "DE2 (PAN) is missing")) }
        guard !pan.isEmpty, isDigits(pan) else { return .failure(ISO8583Refusal(R.formatError, "DE2 must be 1-19 digits")) }
        guard let rrnField = message[37] else { return .failure(ISO8583Refusal(R.formatError, "DE37 (RRN) is missing")) }
        let rrn = trimmed(rrnField)
        guard Identifier.isValid(rrn) else {
            return .failure(ISO8583Refusal(R.formatError, "DE37 must be letters, digits or . _ : - (space padded)"))
        }
        return .success((pan, PAN(pan), rrn))
    }

    static func statementFields(_ message: ISO8583.Message, stan: String, rrn: String) -> [String] {
        [
            "channel", "iso8583",
            "stan", stan,
            "rrn", rrn,
            "terminal", message[41].map(trimmed) ?? "",
            "merchant_id", message[42].map(trimmed) ?? "",
        ]
    }

    /// DE39 for the authorizer's decision.
    public static func responseCode(for decision: Decision) -> String {
        switch decision.code {
        case .approved: return R.approved
        case .insufficientFunds: return R.insufficientFunds
        case .rejected:
            switch decision.rejectReason {
            case .unknownAccount?: return R.invalidCard
            case .timeout?, .storageUnavailable?, .shuttingDown?, .internalError?: return R.issuerUnavailable
            case .amountMismatch?: return R.invalidAmount
            case .card(let refusal)?: return cardResponseCode(refusal)
            case .control(let refusal)?: return controlResponseCode(refusal)
            default: return R.doNotHonour
            }
        }
    }

    /// DE39 for a spending control's refusal.
    static func controlResponseCode(_ refusal: ControlRefusal) -> String {
        switch refusal.kind {
        case .amount: return R.overAmountLimit
        case .count: return R.overCountLimit
        case .notPermitted: return R.notPermitted
        case .frozen: return R.blockedCard
        }
    }

    /// DE39 for a card that cannot authorize.
    static func cardResponseCode(_ refusal: CardRefusal) -> String {
        switch refusal {
        case .unknown, .otherAccount: return R.invalidCard
        case .expired, .expiryMismatch: return R.expiredCard
        case .lost: return R.lostCard
        case .stolen: return R.stolenCard
        case .blocked, .pending: return R.blockedCard
        case .cancelled: return R.cancelledCard
        }
    }

    /// The answer to `request`: its response MTI, the echoed fields, DE39,
    /// DE38 on an approved 0110/0210, DE54 on a balance inquiry's, DE70 on an 0810.
    /// nil when the request's MTI has no response MTI.
    public static func answer(
        to request: ISO8583.Message, fields readable: [Int: String]? = nil, code: String, balances: [CategoryBalance]? = nil
    ) -> ISO8583.Message? {
        guard let mti = ISO8583.responseMTI(for: request.mti) else { return nil }
        let source = readable ?? request.fields
        var answer = ISO8583.Message(mti: mti)
        for number in echoedFields {
            if let value = source[number] { answer[number] = value }
        }
        answer[39] = code
        if mti == "0810", let code = source[70] { answer[70] = code }
        if code == R.approved, mti == "0110" || mti == "0210", let pan = source[2], let rrn = source[37] {
            answer[38] = authorizationID(account: pan, rrn: trimmed(rrn))
        }
        if let balances, code == R.approved {
            answer[54] = balanceBlocks(balances)
        }
        return answer
    }

    /// DE38: 6 digits derived from the account and the RRN, so that a repeat
    /// gets the same authorization id as the first answer.
    public static func authorizationID(account: String, rrn: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in account.utf8 + [0x7C] + rrn.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        let digits = String(hash % 1_000_000)
        return String(repeating: "0", count: 6 - digits.count) + digits
    }

    /// DE54: per category (name order, at most 12), account type (2),
    /// amount type `02` (available), currency `986`, `C` or `D`, amount (12 digits).
    public static func balanceBlocks(_ balances: [CategoryBalance]) -> String {
        var text = ""
        for entry in balances.prefix(maxBalanceBlocks) {
            text += accountTypes[entry.category] ?? otherAccountType
            text += "02"
            text += currency
            let value = entry.balance.value
            text += value < 0 ? "D" : "C"
            let magnitude = String(value.magnitude)
            text += magnitude.count > 12 ? String(repeating: "9", count: 12) : String(repeating: "0", count: 12 - magnitude.count) + magnitude
        }
        return text
    }

    static func isDigits(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
    }

    static func trimmed(_ text: String) -> String {
        var bytes = Substring(text)
        while bytes.first == " " { bytes.removeFirst() }
        while bytes.last == " " { bytes.removeLast() }
        return String(bytes)
    }
}
