/// How the fallback category is used when the mapped category cannot pay.
public enum FallbackMode: String, Sendable, CaseIterable {
    /// The whole amount comes from the fallback category, or the transaction is declined.
    case whole
    /// The mapped category pays what it has, the fallback pays the rest.
    case split
}

/// The rules that turn a merchant and an mcc into a benefit category.
/// Resolved in Swift so each Lua script touches only one account's keys.
public struct Rules: Sendable, Equatable {
    public var mccCategories: [String: String]
    public var merchantMCCs: [String: String]
    public var fallbackCategory: String
    public var fallbackMode: FallbackMode
    /// The program's spending controls (every account; see SpendingControls.swift).
    public var programControls: ProgramControls

    public init(
        mccCategories: [String: String],
        merchantMCCs: [String: String],
        fallbackCategory: String,
        fallbackMode: FallbackMode,
        programControls: ProgramControls = .none
    ) {
        self.mccCategories = mccCategories
        self.merchantMCCs = merchantMCCs
        self.fallbackCategory = fallbackCategory
        self.fallbackMode = fallbackMode
        self.programControls = programControls
    }

    public static let defaults = Rules(
        mccCategories: ["5411": "FOOD", "5412": "FOOD", "5811": "MEAL", "5812": "MEAL"],
        merchantMCCs: [
            "UBER EATS": "5812",
            "UBER TRIP": "4121",
            "PAG*JOSEDASILVA": "5812",
            "PICPAY*BILHETEUNICO": "4111",
        ],
        fallbackCategory: "CASH",
        fallbackMode: .whole
    )

    /// The mcc to use: the merchant overrides the mcc sent by the terminal
    /// (whole descriptor first, then the name alone).
    public func effectiveMCC(mcc: String, merchant: MerchantDescriptor) -> String {
        merchantMCCs[merchant.normalized] ?? merchantMCCs[merchant.name] ?? mcc
    }

    public func resolve(mcc: String, merchant: MerchantDescriptor) -> Resolution {
        let used = effectiveMCC(mcc: mcc, merchant: merchant)
        return Resolution(
            mccUsed: used,
            category: mccCategories[used] ?? fallbackCategory,
            fallbackCategory: fallbackCategory,
            fallbackMode: fallbackMode,
            programControls: programControls.argument
        )
    }

    /// Problems that make a rule set unusable; empty when it is valid.
    public func validationErrors() -> [String] {
        var errors: [String] = []
        if !CategoryName.isValid(fallbackCategory) {
            errors.append("fallback category \"\(fallbackCategory)\" is not a valid category name")
        }
        for (mcc, category) in mccCategories.sorted(by: { $0.key < $1.key }) {
            if !MCC.isValid(mcc) { errors.append("mcc \"\(mcc)\" is not 4 digits") }
            if !CategoryName.isValid(category) { errors.append("category \"\(category)\" for mcc \(mcc) is not a valid category name") }
        }
        for (merchant, mcc) in merchantMCCs.sorted(by: { $0.key < $1.key }) {
            if merchant.isEmpty || merchant != MerchantDescriptor.normalize(merchant) {
                errors.append("merchant \"\(merchant)\" is not normalized (uppercase, single spaces, trimmed)")
            }
            if !MCC.isValid(mcc) { errors.append("mcc \"\(mcc)\" for merchant \(merchant) is not 4 digits") }
        }
        return errors + programControls.validationErrors()
    }
}

/// What the rules say about one transaction; the Lua script decides with it.
public struct Resolution: Sendable, Equatable {
    public let mccUsed: String
    public let category: String
    public let fallbackCategory: String
    public let fallbackMode: FallbackMode
    /// The program's controls as authorize.lua reads them ("" for none).
    public let programControls: String

    public init(mccUsed: String, category: String, fallbackCategory: String, fallbackMode: FallbackMode, programControls: String = "") {
        self.mccUsed = mccUsed
        self.category = category
        self.fallbackCategory = fallbackCategory
        self.fallbackMode = fallbackMode
        self.programControls = programControls
    }
}
