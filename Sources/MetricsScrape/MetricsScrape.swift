import Foundation
import NIOCore
import NIOPosix

// A Prometheus /metrics reader for `authorizer top`: the endpoint's URL, a
// bounded HTTP GET over NIO, and the text format parsed into samples.

/// `http://host[:port][/path]`; the path defaults to /metrics.
public struct MetricsURL: Sendable, CustomStringConvertible {
    public let host: String
    public let port: Int
    public let path: String

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public init(_ text: String) throws {
        guard let components = URLComponents(string: text), components.scheme == "http", let host = components.host, !host.isEmpty else {
            throw Invalid(description: "\(text) is not a URL like http://127.0.0.1:9464")
        }
        self.host = host
        self.port = components.port ?? 80
        self.path = components.path.isEmpty || components.path == "/" ? "/metrics" : components.path
    }

    public var description: String { "http://\(host):\(port)\(path)" }
}

/// A plain HTTP/1.1 GET over NIO, bounded in size and time.
public enum MetricsScraper {
    public static let maxBytes = 8 << 20

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public static func get(_ url: MetricsURL, on loop: EventLoop, timeout: TimeAmount = .seconds(2)) -> EventLoopFuture<String> {
        let promise = loop.makePromise(of: ByteBuffer.self)
        let connected = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(.allowRemoteHalfClosure, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise, limit: maxBytes))
                }
            }
            .connect(host: url.host, port: url.port)
        connected.whenSuccess { channel in
            let request = "GET \(url.path) HTTP/1.1\r\nHost: \(url.host):\(url.port)\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
            channel.writeAndFlush(channel.allocator.buffer(string: request), promise: nil)
            let deadline = loop.scheduleTask(in: timeout) {
                promise.fail(Failure(description: "no answer from \(url) within \(timeout.nanoseconds / 1_000_000) ms"))
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in deadline.cancel() }
        }
        connected.whenFailure { promise.fail($0) }
        return promise.futureResult.flatMapThrowing { buffer in
            let text = String(buffer: buffer)
            guard let split = text.range(of: "\r\n\r\n") else { throw Failure(description: "not an HTTP response from \(url)") }
            let statusLine = text[..<split.lowerBound].prefix { $0 != "\r" }
            guard statusLine.split(separator: " ").dropFirst().first == "200" else {
                throw Failure(description: "\(url) answered \(statusLine)")
            }
            return String(text[split.upperBound...])
        }
    }

    /// Collects the whole response; the server closes after it (Connection: close).
    private final class ResponseCollector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer

        private let promise: EventLoopPromise<ByteBuffer>
        private let limit: Int
        private var received = ByteBuffer()
        private var done = false

        init(promise: EventLoopPromise<ByteBuffer>, limit: Int) {
            self.promise = promise
            self.limit = limit
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var chunk = unwrapInboundIn(data)
            received.writeBuffer(&chunk)
            if received.readableBytes > limit {
                finish(.failure(Failure(description: "metrics response larger than \(limit) bytes")))
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            finish(.success(received))
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            finish(.failure(error))
            context.close(promise: nil)
        }

        private func finish(_ result: Result<ByteBuffer, Error>) {
            guard !done else { return }
            done = true
            promise.completeWith(result)
        }
    }
}

/// The Prometheus text format, as far as `top` needs it: samples by name,
/// each with its labels.
public struct PrometheusSample: Sendable {
    public struct Series: Sendable {
        public let labels: [String: String]
        public let value: Double
    }

    public private(set) var series: [String: [Series]] = [:]

    public init(text: String) {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            if let (name, entry) = Self.parse(line) { series[name, default: []].append(entry) }
        }
    }

    /// The sum over every series of `name` whose labels include `matching`.
    public func sum(_ name: String, _ matching: [String: String] = [:]) -> Double {
        (series[name] ?? []).filter { entry in matching.allSatisfy { entry.labels[$0.key] == $0.value } }.reduce(0) { $0 + $1.value }
    }

    public func values(_ name: String) -> [Series] { series[name] ?? [] }

    /// Cumulative buckets of a histogram as (upper bound, count), summed over `matching` series.
    public func buckets(_ histogram: String, _ matching: [String: String] = [:]) -> [(Double, Double)] {
        var byBound: [Double: Double] = [:]
        for entry in values(histogram + "_bucket") where matching.allSatisfy({ entry.labels[$0.key] == $0.value }) {
            guard let bound = entry.labels["le"].flatMap(Self.number) else { continue }
            byBound[bound, default: 0] += entry.value
        }
        return byBound.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    private static func parse(_ line: Substring) -> (String, Series)? {
        let nameEnd = line.firstIndex { $0 == "{" || $0 == " " } ?? line.endIndex
        let name = String(line[..<nameEnd])
        guard !name.isEmpty, nameEnd < line.endIndex else { return nil }
        var labels: [String: String] = [:]
        var rest = line[nameEnd...]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while let equals = rest.firstIndex(of: "=") {
                let key = rest[..<equals].trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                rest = rest[rest.index(after: equals)...]
                guard rest.first == "\"" else { return nil }
                rest = rest.dropFirst()
                var value = ""
                var escaped = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if escaped {
                        value.append(character == "n" ? "\n" : character)
                        escaped = false
                    } else if character == "\\" {
                        escaped = true
                    } else if character == "\"" {
                        break
                    } else {
                        value.append(character)
                    }
                }
                labels[key] = value
                rest = rest.drop { $0 == "," || $0 == " " }
                if rest.first == "}" { break }
            }
            guard let close = rest.firstIndex(of: "}") else { return nil }
            rest = rest[rest.index(after: close)...]
        }
        guard let valueText = rest.split(separator: " ").first, let value = number(String(valueText)) else { return nil }
        return (name, Series(labels: labels, value: value))
    }

    public static func number(_ text: String) -> Double? {
        switch text {
        case "+Inf": return .infinity
        case "-Inf": return -.infinity
        default: return Double(text)
        }
    }
}
