import Buffers
import Foundation
import XCTest
import ZeroMQ

/// Real sockets over inproc and TCP loopback.
final class ZeroMQTests: XCTestCase {
    let context = ZMQContext()

    func testRequestReplyOverTCPLoopback() throws {
        let rep = try ZMQSocket(context, .rep), req = try ZMQSocket(context, .req)
        let endpoint = try rep.bind("tcp://127.0.0.1:*")
        XCTAssertTrue(endpoint.hasPrefix("tcp://127.0.0.1:"), endpoint)
        try req.connect(endpoint)
        try req.send([Frame("ping"), Frame("2")])
        XCTAssertEqual(try rep.receive()?.map { String(decoding: $0, as: UTF8.self) }, ["ping", "2"])
        try rep.send([Frame("pong")])
        XCTAssertEqual(try req.receive()?.first.map { String(decoding: $0, as: UTF8.self) }, "pong")
    }

    func testRouterSeesTheDealersIdentityAndAnswersIt() throws {
        let router = try ZMQSocket(context, .router), dealer = try ZMQSocket(context, .dealer)
        try router.set(.routerMandatory(true))
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        try dealer.set(.routingId("worker-7"))
        try dealer.connect(endpoint)
        try dealer.send([Frame("hello")])
        let got = try XCTUnwrap(try router.receive())
        XCTAssertEqual(String(decoding: got[0], as: UTF8.self), "worker-7")
        try router.send([.data(got[0]), Frame("welcome")])
        XCTAssertEqual(try dealer.receive()?.map { String(decoding: $0, as: UTF8.self) }, ["welcome"])
        // An unknown peer is an error with ROUTER_MANDATORY, not a silent drop.
        XCTAssertThrowsError(try router.send([Frame("nobody"), Frame("x")])) { XCTAssertTrue(($0 as! ZMQError).isUnreachable, "\($0)") }
    }

    func testLargeSharedFrameTravelsWithoutACopyOverInproc() throws {
        let push = try ZMQSocket(context, .push), pull = try ZMQSocket(context, .pull)
        try pull.bind("inproc://bulk")
        try push.connect("inproc://bulk")
        let count = 64 << 20
        let buffer = SharedBuffer(count: count)
        for i in stride(from: 0, to: count, by: 4096) { buffer.bytes[i] = UInt8(truncatingIfNeeded: i / 4096) }
        try push.send([Frame("tensor"), .shared(buffer, count: count)])
        let frames = try XCTUnwrap(try pull.receive())
        XCTAssertEqual(frames[1].count, count)
        frames[1].withUnsafeBytes { XCTAssertEqual($0.baseAddress, UnsafeRawPointer(buffer.bytes.baseAddress), "inproc should hand over the same memory") }
        XCTAssertEqual(frames[1][4096 * 3], 3)
    }

    func testNonBlockingCallsSayNotNow() throws {
        let pull = try ZMQSocket(context, .pull)
        try pull.bind("inproc://empty")
        XCTAssertNil(try pull.receive(wait: false))
        let push = try ZMQSocket(context, .push) // not connected: nothing can take the message
        try push.set(.sendHighWaterMark(1))
        XCTAssertFalse(try push.send([Frame("x")], wait: false))
    }

    func testPollReportsReadableSocketsAndTimesOut() throws {
        let a = try ZMQSocket(context, .pull), b = try ZMQSocket(context, .pull), push = try ZMQSocket(context, .push)
        try a.bind("inproc://a"); try b.bind("inproc://b")
        try push.connect("inproc://b")
        XCTAssertEqual(try ZMQPoll.readable([a, b], timeoutMilliseconds: 10), [false, false])
        try push.send([Frame("x")])
        XCTAssertEqual(try ZMQPoll.readable([a, b], timeoutMilliseconds: 1000), [false, true])
    }

    func testClosingWithUndeliveredMessagesDoesNotHang() throws {
        // On its own thread, so a hang fails this test within the deadline instead of stalling the run.
        let closed = DispatchSemaphore(value: 0)
        Thread {
            do {
                let ctx = ZMQContext()
                let push = try ZMQSocket(ctx, .push)
                try push.connect("tcp://127.0.0.1:1") // nobody listens
                XCTAssertTrue(try push.send([Frame("never delivered")], wait: false)) // queued for the pending connection
                let dealer = try ZMQSocket(ctx, .dealer)
                try dealer.connect("tcp://127.0.0.1:1")
                push.close(); dealer.close()
                // ZMQContext's deinit runs zmq_ctx_term at the end of this scope; linger 0 makes it return at once.
            } catch { XCTFail("\(error)") }
            closed.signal()
        }.start()
        XCTAssertEqual(closed.wait(timeout: .now() + 10), .success, "closing a context with undelivered messages hung")
    }

    func testBadEndpointsGiveOneClearError() throws {
        let s = try ZMQSocket(context, .pull)
        XCTAssertThrowsError(try s.bind("nonsense://x")) { XCTAssertTrue("\($0)".hasPrefix("zmq bind nonsense://x: "), "\($0)") }
        XCTAssertThrowsError(try s.connect("tcp://")) { XCTAssertTrue("\($0)".contains("zmq connect tcp://"), "\($0)") }
    }

    func testCurveLetsTheRightKeyInAndKeepsAWrongOneOut() throws {
        try XCTSkipUnless(ZMQ.hasCurve, "libzmq built without CURVE")
        let server = try CurveKeyPair.generate(), client = try CurveKeyPair.generate(), stranger = try CurveKeyPair.generate()
        XCTAssertEqual(try CurveKeyPair.publicKey(for: server.secretKey), server.publicKey)
        let router = try ZMQSocket(context, .router)
        try router.makeCurveServer(secretKey: server.secretKey)
        let endpoint = try router.bind("tcp://127.0.0.1:*")

        let good = try ZMQSocket(context, .dealer)
        try good.makeCurveClient(serverKey: server.publicKey, keys: client)
        try good.connect(endpoint)
        try good.send([Frame("hi")])
        XCTAssertEqual(try ZMQPoll.readable([router], timeoutMilliseconds: 3000), [true])
        XCTAssertEqual(try router.receive()?.last.map { String(decoding: $0, as: UTF8.self) }, "hi")

        // A client that believes in another server key fails the handshake: nothing arrives.
        let bad = try ZMQSocket(context, .dealer)
        try bad.makeCurveClient(serverKey: stranger.publicKey, keys: client)
        try bad.connect(endpoint)
        _ = try bad.send([Frame("let me in")], wait: false)
        XCTAssertEqual(try ZMQPoll.readable([router], timeoutMilliseconds: 500), [false])
        // A plain-text client is refused as well.
        let plain = try ZMQSocket(context, .dealer)
        try plain.connect(endpoint)
        _ = try plain.send([Frame("plain")], wait: false)
        XCTAssertEqual(try ZMQPoll.readable([router], timeoutMilliseconds: 500), [false])
    }

    /// With a ZAP handler, a client with the right server key but a key not on the allow-list is
    /// refused and counted; an allowed one gets in.
    func testZAPAdmitsOnlyAllowedKeys() throws {
        try XCTSkipUnless(ZMQ.hasCurve, "libzmq built without CURVE")
        let ctx = ZMQContext()
        let server = try CurveKeyPair.generate(), allowed = try CurveKeyPair.generate(), other = try CurveKeyPair.generate()
        let zap = try ZAPHandler(context: ctx, allowedKeys: [allowed.publicKey]) { _ in }
        let router = try ZMQSocket(ctx, .router)
        try router.makeCurveServer(secretKey: server.secretKey)
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        let outsider = try ZMQSocket(ctx, .dealer)
        try outsider.makeCurveClient(serverKey: server.publicKey, keys: other)
        try outsider.connect(endpoint)
        _ = try outsider.send([Frame("let me in")], wait: false)
        // The refusal happens on libzmq's and the handler's threads: wait for it (nothing may arrive meanwhile).
        let deadline = Date().addingTimeInterval(20)
        while zap.refused == 0 && Date() < deadline {
            XCTAssertEqual(try ZMQPoll.readable([router], timeoutMilliseconds: 50), [false])
        }
        XCTAssertGreaterThanOrEqual(zap.refused, 1)
        let insider = try ZMQSocket(ctx, .dealer)
        try insider.makeCurveClient(serverKey: server.publicKey, keys: allowed)
        try insider.connect(endpoint)
        try insider.send([Frame("hi")])
        XCTAssertEqual(try ZMQPoll.readable([router], timeoutMilliseconds: 3000), [true])
        XCTAssertEqual(try router.receive()?.last.map { String(decoding: $0, as: UTF8.self) }, "hi")
        for s in [router, outsider, insider] { s.close() }
        zap.stop()
        XCTAssertThrowsError(try ZAPHandler(context: ZMQContext(), allowedKeys: ["short"]) { _ in })
    }
}
