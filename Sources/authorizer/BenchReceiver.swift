import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// `authorizer bench receiver`: a webhook receiver for the benchmark. It
/// answers every POST 200 at once (no signature check: the cost measured
/// is the deliverer's) and records, per event, the time from its ledger
/// entry (`created_ms` in the body) to its arrival. SIGTERM prints a JSON
/// summary: events, first duplicate count, latency p50/p99/max in ms.
struct BenchReceiver: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receiver",
        abstract: "A webhook receiver for `make bench`: 200 to every POST, decision-to-arrival latency.",
        shouldDisplay: false
    )

    @Option(help: "Port to listen on (0: any; the bound port is printed).")
    var port = 0

    func run() async throws {
        let state = ReceiverState()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(ReceiverHandler(state: state))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        print("receiver listening port=\(channel.localAddress?.port ?? port)")
        fflush(nil)
        let services = ServiceGroup(configuration: .init(
            services: [.init(service: ReceiverService(), successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: Logger(label: "authorizer.bench.receiver")
        ))
        try await services.run()
        try await channel.close()
        print(state.summary())
        fflush(nil)
    }
}

/// Runs until SIGTERM/SIGINT.
struct ReceiverService: Service {
    func run() async throws {
        try? await gracefulShutdown()
    }
}

final class ReceiverState: Sendable {
    private struct Counts {
        var events = 0
        var duplicates = 0
        var seen = Set<Substring>()
        var latency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .three)
    }

    private let counts = NIOLockedValueBox(Counts())

    func record(body: ByteBuffer) {
        let text = String(buffer: body)
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let created = Self.field("\"created_ms\":", in: text).flatMap { UInt64($0) }
        let id = Self.field("\"event_id\":\"", in: text, until: "\"")
        counts.withLockedValue { counts in
            counts.events += 1
            if let id, !counts.seen.insert(Substring(id)).inserted { counts.duplicates += 1 }
            if let created { counts.latency.record(now >= created ? now - created : 0) }
        }
    }

    private static func field(_ key: String, in text: String, until terminator: Character? = nil) -> String? {
        guard let range = text.range(of: key) else { return nil }
        let rest = text[range.upperBound...]
        if let terminator { return rest.firstIndex(of: terminator).map { String(rest[..<$0]) } }
        return String(rest.prefix { $0.isNumber })
    }

    func summary() -> String {
        counts.withLockedValue { counts in
            """
            {"events":\(counts.events),"duplicates":\(counts.duplicates),"latency_ms":{"p50":\(counts.latency.valueAtPercentile(50)),\
            "p99":\(counts.latency.valueAtPercentile(99)),"max":\(counts.latency.max)}}
            """
        }
    }
}

final class ReceiverHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: ReceiverState
    private var body: ByteBuffer?
    private var keepAlive = true

    init(state: ReceiverState) {
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            keepAlive = head.isKeepAlive
            body = context.channel.allocator.buffer(capacity: 1_024)
        case .body(var chunk):
            if (body?.readableBytes ?? 0) < 64 * 1_024 { body?.writeBuffer(&chunk) }
        case .end:
            if let body { state.record(body: body) }
            body = nil
            var headers = HTTPHeaders([("Content-Length", "0")])
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            let keepAlive = self.keepAlive
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { context.close(promise: nil) }
            }
        }
    }
}
