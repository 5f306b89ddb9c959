import CHiredis
import NIOCore

/// One Redis command as its argument list; encoded to RESP by hiredis.
public struct RedisCommand: Sendable, CustomStringConvertible {
    public var arguments: [String]

    public init(_ arguments: [String]) {
        precondition(!arguments.isEmpty, "a command has a name")
        self.arguments = arguments
    }

    public init(_ name: String, _ rest: String...) {
        self.init([name] + rest)
    }

    public var description: String { arguments.prefix(3).joined(separator: " ") }

    /// Appends the RESP encoding of the command to `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        var storage: [UInt8] = []
        storage.reserveCapacity(arguments.reduce(0) { $0 + $1.utf8.count })
        var lengths: [Int] = []
        lengths.reserveCapacity(arguments.count)
        for argument in arguments {
            storage.append(contentsOf: argument.utf8)
            lengths.append(argument.utf8.count)
        }
        // A non-empty backing store keeps every argv pointer valid, even for
        // empty arguments.
        storage.append(0)
        storage.withUnsafeBufferPointer { base in
            let start = UnsafeRawPointer(base.baseAddress!).assumingMemoryBound(to: CChar.self)
            var argv: [UnsafePointer<CChar>?] = []
            argv.reserveCapacity(lengths.count)
            var offset = 0
            for length in lengths {
                argv.append(start + offset)
                offset += length
            }
            var target: UnsafeMutablePointer<CChar>?
            let written = argv.withUnsafeMutableBufferPointer { argvBuffer in
                lengths.withUnsafeBufferPointer { lengthBuffer in
                    redisFormatCommandArgv(&target, Int32(lengths.count), argvBuffer.baseAddress, lengthBuffer.baseAddress)
                }
            }
            precondition(written > 0 && target != nil, "hiredis could not format \(self)")
            buffer.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(written)))
            redisFreeCommand(target)
        }
    }
}
