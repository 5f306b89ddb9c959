import NIOCore

/// What the framer hands on: a line (newline and trailing CR removed), or
/// the news that a line outgrew the limit.
enum TerminalFrame {
    case line(ByteBuffer)
    case tooLong
}

/// Splits the byte stream at `\n`, bounded by `maxLength`. After a line
/// outgrows the limit, everything else on the connection is dropped (the
/// handler answers 07 and closes).
struct LineFramer: ByteToMessageDecoder {
    typealias InboundOut = TerminalFrame

    let maxLength: Int
    private var scanned = 0
    private var discarding = false

    init(maxLength: Int) {
        precondition(maxLength > 0)
        self.maxLength = maxLength
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if discarding {
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            return .needMoreData
        }
        let newline = buffer.withUnsafeReadableBytes { bytes -> Int? in
            guard scanned < bytes.count else { return nil }
            let window = UnsafeRawBufferPointer(rebasing: bytes[scanned...])
            return window.firstIndex(of: UInt8(ascii: "\n")).map { $0 + scanned }
        }
        guard let newline else {
            // A line of exactly maxLength may have its `\r` in this read and
            // its `\n` in the next: one byte of slack for a trailing CR.
            let pending = buffer.readableBytes
            let endsInCR = pending > 0 && buffer.getInteger(at: buffer.readerIndex + pending - 1, as: UInt8.self) == UInt8(ascii: "\r")
            if pending > maxLength + (endsInCR ? 1 : 0) {
                discarding = true
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                context.fireChannelRead(wrapInboundOut(.tooLong))
            } else {
                scanned = buffer.readableBytes
            }
            return .needMoreData
        }
        scanned = 0
        var length = newline
        if length > 0, buffer.getInteger(at: buffer.readerIndex + length - 1, as: UInt8.self) == UInt8(ascii: "\r") {
            length -= 1
        }
        guard length <= maxLength else {
            discarding = true
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            context.fireChannelRead(wrapInboundOut(.tooLong))
            return .needMoreData
        }
        let line = buffer.getSlice(at: buffer.readerIndex, length: length)!
        buffer.moveReaderIndex(forwardBy: newline + 1)
        context.fireChannelRead(wrapInboundOut(.line(line)))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A final line without its newline is incomplete: it gets no answer.
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
        return .needMoreData
    }
}
