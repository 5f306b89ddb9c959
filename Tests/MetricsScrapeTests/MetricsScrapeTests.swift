import MetricsScrape
import NIOCore
import NIOPosix
import XCTest

final class PrometheusSampleTests: XCTestCase {
    private let exposition = #"""
    # HELP authorizer_requests_total Requests decided.
    # TYPE authorizer_requests_total counter
    authorizer_requests_total{code="00",reason="none"} 12
    authorizer_requests_total{code="07",reason="unknown_account"} 3
    authorizer_requests_total{code="07",reason="account_busy"} 2
    authorizer_terminal_connections 4
    weird_label{path="a \"quoted\" \\ back\nline",other="x"} 1.5
    latency_seconds_bucket{le="0.1",script="authorize"} 7
    latency_seconds_bucket{le="+Inf",script="authorize"} 9
    latency_seconds_bucket{le="0.1",script="decline"} 1
    latency_seconds_bucket{le="+Inf",script="decline"} 1
    latency_seconds_bucket{le="0.05",script="decline"} 1
    not a sample line
    broken{le="0.1" 3
    """#

    func testSamplesByNameWithTheirLabels() {
        let sample = PrometheusSample(text: exposition)
        XCTAssertEqual(sample.sum("authorizer_requests_total"), 17)
        XCTAssertEqual(sample.sum("authorizer_requests_total", ["code": "07"]), 5)
        XCTAssertEqual(sample.sum("authorizer_requests_total", ["code": "07", "reason": "account_busy"]), 2)
        XCTAssertEqual(sample.sum("authorizer_terminal_connections"), 4)
        XCTAssertEqual(sample.values("authorizer_requests_total").count, 3)
        XCTAssertEqual(sample.sum("missing"), 0)
        XCTAssertTrue(sample.values("broken").isEmpty, "an unterminated label set is skipped")
    }

    func testEscapesInLabelValues() throws {
        let series = try XCTUnwrap(PrometheusSample(text: exposition).values("weird_label").first)
        XCTAssertEqual(series.labels["path"], "a \"quoted\" \\ back\nline")
        XCTAssertEqual(series.labels["other"], "x")
        XCTAssertEqual(series.value, 1.5)
    }

    func testBucketsAreSummedOverSeriesAndSortedWithInfinityLast() {
        let sample = PrometheusSample(text: exposition)
        let all = sample.buckets("latency_seconds")
        XCTAssertEqual(all.map(\.0), [0.05, 0.1, .infinity])
        XCTAssertEqual(all.map(\.1), [1, 8, 10])
        XCTAssertEqual(sample.buckets("latency_seconds", ["script": "authorize"]).map(\.1), [7, 9])
    }

    func testURLs() throws {
        XCTAssertEqual(try MetricsURL("http://127.0.0.1:9464").description, "http://127.0.0.1:9464/metrics")
        XCTAssertEqual(try MetricsURL("http://metrics.internal/custom").description, "http://metrics.internal:80/custom")
        XCTAssertThrowsError(try MetricsURL("https://127.0.0.1:9464"))
        XCTAssertThrowsError(try MetricsURL("127.0.0.1:9464"))
    }
}

/// The scraper against a small NIO server that answers as told.
final class MetricsScraperTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!

    override func setUp() {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    override func tearDown() {
        try? group.syncShutdownGracefully()
    }

    /// Answers every connection with `response` (nil: never answers), then closes.
    private final class CannedResponse: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let response: String?
        init(_ response: String?) { self.response = response }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let response else { return }
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: response))).whenComplete { _ in context.close(promise: nil) }
        }
    }

    private func server(_ response: String?) throws -> Channel {
        try ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(CannedResponse(response)) }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    private func url(_ channel: Channel) throws -> MetricsURL {
        try MetricsURL("http://127.0.0.1:\(channel.localAddress!.port!)")
    }

    func testReturnsTheBodyOfA200() throws {
        let server = try server("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nup 1\n")
        defer { server.close(promise: nil) }
        let body = try MetricsScraper.get(url(server), on: group.next()).wait()
        XCTAssertEqual(body, "up 1\n")
        XCTAssertEqual(PrometheusSample(text: body).sum("up"), 1)
    }

    func testAnotherStatusFails() throws {
        let server = try server("HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nnope")
        defer { server.close(promise: nil) }
        XCTAssertThrowsError(try MetricsScraper.get(url(server), on: group.next()).wait()) { error in
            XCTAssertTrue("\(error)".contains("404"), "\(error)")
        }
    }

    func testASilentServerTimesOut() throws {
        let server = try server(nil)
        defer { server.close(promise: nil) }
        let started = Date()
        XCTAssertThrowsError(try MetricsScraper.get(url(server), on: group.next(), timeout: .milliseconds(200)).wait()) { error in
            XCTAssertTrue("\(error)".contains("within 200 ms"), "\(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
    }
}
