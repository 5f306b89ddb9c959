import CHiredis
import NIOCore

/// Turns bytes from Redis into `RESPValue`s with hiredis's reply reader.
/// RESP2 only: Debian's hiredis 0.14 cannot parse RESP3.
public final class RESPReplyDecoder: ByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    private let reader: UnsafeMutablePointer<redisReader>

    public init() {
        guard let reader = redisReaderCreate() else { fatalError("hiredis could not allocate a reader") }
        self.reader = reader
    }

    deinit {
        redisReaderFree(reader)
    }

    public func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if buffer.readableBytes > 0 {
            let fed = buffer.readWithUnsafeReadableBytes { bytes -> Int in
                let status = redisReaderFeed(reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
                return status == REDIS_OK ? bytes.count : -1
            }
            if fed < 0 { throw RedisError.unexpectedReply(readerError()) }
        }
        while true {
            var raw: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else {
                throw RedisError.unexpectedReply(readerError())
            }
            guard let raw else { return .needMoreData }
            let reply = raw.assumingMemoryBound(to: redisReply.self)
            let value = RESPReplyDecoder.convert(reply)
            freeReplyObject(raw)
            context.fireChannelRead(wrapInboundOut(value))
        }
    }

    public func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }

    private func readerError() -> String {
        withUnsafeBytes(of: reader.pointee.errstr) { bytes in
            String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING:
            return .bulkString(bytes(node))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(decoding: bytes(node), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: bytes(node), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(node.integer)
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var elements: [RESPValue] = []
            elements.reserveCapacity(node.elements)
            for index in 0..<node.elements {
                if let child = node.element[index] {
                    elements.append(convert(child))
                } else {
                    elements.append(.null)
                }
            }
            return .array(elements)
        default:
            return .error("unsupported reply type \(node.type)")
        }
    }

    private static func bytes(_ node: redisReply) -> [UInt8] {
        guard let pointer = node.str, node.len > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: node.len))
    }
}
