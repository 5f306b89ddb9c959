/// Redis Cluster key slots: CRC16 (XMODEM: polynomial 0x1021, initial value
/// 0, no reflection) of the key's hash tag, modulo 16384. The hash tag is the
/// text between the first `{` and the next `}` when that text is not empty;
/// otherwise the whole key. Every key of one account (`account:{ID}`,
/// `lock:{ID}`, `txn:{ID}:…`) therefore lands on the slot of `ID`.
public enum HashSlot {
    public static let count = 16_384

    /// The slot of a key, as Redis computes it.
    public static func of<Bytes: Collection>(key: Bytes) -> Int where Bytes.Element == UInt8 {
        let tagged = hashTag(of: key)
        return Int(crc16(tagged) & 0x3FFF)
    }

    public static func of(key: String) -> Int { of(key: Array(key.utf8)) }

    /// The part of the key that is hashed.
    static func hashTag<Bytes: Collection>(of key: Bytes) -> Bytes.SubSequence where Bytes.Element == UInt8 {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return key[...] }
        let afterOpen = key.index(after: open)
        guard let close = key[afterOpen...].firstIndex(of: UInt8(ascii: "}")), close != afterOpen else { return key[...] }
        return key[afterOpen..<close]
    }

    /// CRC16-CCITT (XMODEM), the variant of the cluster specification.
    public static func crc16<Bytes: Sequence>(_ bytes: Bytes) -> UInt16 where Bytes.Element == UInt8 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = crc16(crc, byte)
        }
        return crc
    }

    /// One step of the CRC: `crc` extended by `byte`.
    @inline(__always)
    public static func crc16(_ crc: UInt16, _ byte: UInt8) -> UInt16 {
        (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var value = UInt16(index) << 8
        for _ in 0..<8 {
            value = value & 0x8000 != 0 ? (value << 1) ^ 0x1021 : value << 1
        }
        return value
    }
}
