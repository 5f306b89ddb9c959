import Crypto
import Foundation

/// The `Authorizer-Signature` header: `t=<unix seconds>,v1=<hex>`, where
/// each `v1` is HMAC-SHA256 of `<t>.<body>` with one of the endpoint's
/// secrets (two during a rotation: the new one first). A receiver accepts
/// the request when any `v1` matches a secret it holds and `t` is within
/// its tolerance of its clock (300 s), which also bounds replays.
public enum WebhookSignature {
    public static let headerName = "Authorizer-Signature"
    public static let eventHeaderName = "Authorizer-Event-Id"
    /// How far `t` may be from the receiver's clock.
    public static let toleranceSeconds: Int64 = 300

    public static func header(body: [UInt8], timestamp: Int64, secrets: [SymmetricKey]) -> String {
        precondition(!secrets.isEmpty && secrets.count <= 2, "one secret, two during a rotation")
        let signed = Array("\(timestamp).".utf8) + body
        return (["t=\(timestamp)"] + secrets.map { "v1=\(hex(HMAC<SHA256>.authenticationCode(for: signed, using: $0)))" })
            .joined(separator: ",")
    }

    /// What a receiver does (the Python receiver in `scripts/` does the same
    /// with its own HMAC): true when a `v1` matches one of `secrets` and `t`
    /// is within the tolerance of `now`.
    public static func verify(header: String, body: [UInt8], secrets: [SymmetricKey], now: Int64) -> Bool {
        var timestamp: Int64?
        var signatures: [String] = []
        for part in header.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { return false }
            switch pair[0] {
            case "t":
                guard timestamp == nil, let value = Int64(pair[1]) else { return false }
                timestamp = value
            case "v1": signatures.append(String(pair[1]))
            default: continue
            }
        }
        guard let timestamp, abs(now - timestamp) <= toleranceSeconds, !signatures.isEmpty else { return false }
        let signed = Array("\(timestamp).".utf8) + body
        return secrets.contains { secret in
            signatures.contains { signature in
                guard let code = bytes(hex: signature), code.count == SHA256.byteCount else { return false }
                return HMAC<SHA256>.isValidAuthenticationCode(code, authenticating: signed, using: secret)
            }
        }
    }

    static func hex<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    static func bytes(hex: String) -> [UInt8]? {
        let utf8 = Array(hex.utf8)
        guard utf8.count % 2 == 0, utf8.count <= 128 else { return nil }
        var bytes: [UInt8] = []
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
