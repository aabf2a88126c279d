import Foundation
import Wire
import XCTest

final class WireTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("protocol/fixtures")

    /// The golden messages: what each fixture file holds.
    static func golden() -> [(String, Message)] {
        var register = Charter_V1_Register()
        register.workerID = "worker-1"; register.threads = 2; register.capabilities = ["generate", "score"]
        register.chunkEndpoint = "tcp://127.0.0.1:6001"; register.policyVersionHeld = 3
        var registerKernel = register
        registerKernel.kernel = "avx512"
        var task = Charter_V1_Task()
        task.taskID = "7-2"; task.iteration = 7; task.policyVersion = 7; task.samplesPerPrompt = 2; task.runSeed = 42
        var p = Charter_V1_PromptWork(); p.promptID = 11; p.tokens = [1, 4093, 198]; p.unsafe = true
        task.prompts = [p]
        task.sampling.temperature = 0.7; task.sampling.topP = 0.9; task.sampling.maxNewTokens = 48; task.sampling.stopTokens = [2]
        var announce = Charter_V1_ModelAnnounce()
        announce.model = "reward.helpful"; announce.version = 8; announce.totalBytes = 6 << 20; announce.lora = false; announce.layout = "llama-30x576"
        var c0 = Charter_V1_ChunkInfo(); c0.index = 0; c0.offset = 0; c0.size = 4 << 20; c0.crc32C = 0xDEAD_BEEF
        var c1 = Charter_V1_ChunkInfo(); c1.index = 1; c1.offset = 4 << 20; c1.size = 2 << 20; c1.crc32C = 0x0BAD_F00D
        announce.chunks = [c0, c1]; announce.manifestCrc32C = 0x1234_5678; announce.sources = ["tcp://127.0.0.1:6001", "tcp://127.0.0.1:5556"]
        var error = Charter_V1_Error(); error.code = .versionMismatch; error.message = "coordinator speaks protocol 4, got 3"
        var missing = Charter_V1_ChunkReply(); missing.model = "reward.helpful"; missing.version = 8; missing.index = 1; missing.missing = true
        var request = Charter_V1_ChunkRequest(); request.model = "reward.helpful"; request.version = 8; request.index = 1
        var ready = Charter_V1_ModelReady(); ready.model = "reward.helpful"; ready.version = 8
        // Raw scores: one sample with a helpfulness score only (no safety model), cut off at the length limit.
        var record = Charter_V1_SampleRecord()
        record.promptID = 11; record.index = 1; record.response = [504, 3575]; record.logprobs = [-0.5, -1.25]
        record.referenceLogprobs = [-0.75, -1]; record.seed = 99; record.helpfulnessScore = -2.5; record.ruleReward = 1; record.truncated = true
        var result = Charter_V1_TaskResult(); result.taskID = "7-2"; result.iteration = 7; result.policyVersion = 7; result.samples = [record]
        // With PPO's value head on the policy trunk: a value per response token.
        var valued = result; valued.samples[0].values = [0.25, -1.5]
        // A stage task of each kind and a result with one item of each kind (an error item too).
        func item(_ id: String) -> Charter_V1_Item {
            var i = Charter_V1_Item(); i.itemID = id; i.seed = 7
            var turn = Charter_V1_ChatTurn(); turn.role = "user"; turn.content = "Say hello."
            i.messages = [turn]
            return i
        }
        var generate = Charter_V1_Task(); generate.taskID = "run-1/generate-0"; generate.kind = .generate; generate.stage = "generate"
        var policy = Charter_V1_ModelRef(); policy.name = "policy"; policy.version = 0
        generate.models = [policy]; generate.sampling.temperature = 1; generate.sampling.maxNewTokens = 32
        var raw = item("b"); raw.messages = []; raw.prompt = "Once upon a time"
        generate.items = [item("a"), raw]
        var revise = generate; revise.kind = .revise; revise.stage = "revise"; revise.taskID = "run-1/revise-0"
        var critiqued = item("a"); critiqued.steps = ["Point out what is rude in your answer.", "Rewrite it without that."]
        revise.items = [critiqued]
        var options = Charter_V1_Task(); options.taskID = "run-1/options-0"; options.kind = .options; options.stage = "label"
        var judge = Charter_V1_ModelRef(); judge.name = "feedback"
        options.models = [judge]
        var asked = item("a"); asked.options = [" (A)", " (B)"]
        options.items = [asked]
        var score = Charter_V1_Task(); score.taskID = "run-1/score-0"; score.kind = .score; score.stage = "score"
        var helpful = Charter_V1_ModelRef(); helpful.name = "reward.helpful"
        var safe = Charter_V1_ModelRef(); safe.name = "reward.safety"
        score.models = [helpful, safe]
        var answered = item("a"); answered.response = "Hello!"
        score.items = [answered]
        var g = Charter_V1_ItemResult(); g.itemID = "a"; g.texts = ["Hello"]; g.tokens = [19556, 2]; g.logprobs = [-0.25, -0.5]; g.truncated = [false]; g.textTokens = [2]
        var r = Charter_V1_ItemResult(); r.itemID = "c"; r.texts = ["Hi, idiot.", "Rude.", "Hi."]; r.truncated = [false, false, true]; r.textTokens = [6, 3, 8]
        var o = Charter_V1_ItemResult(); o.itemID = "d"; o.optionLogprobs = [-1.5, -0.75]; o.optionTokens = [3, 3]
        var sc = Charter_V1_ItemResult(); sc.itemID = "e"; sc.helpfulnessScore = 1.25; sc.ruleReward = 0.5
        var failed = Charter_V1_ItemResult(); failed.itemID = "f"; failed.error = "the prompt has 2000 tokens; it does not fit the context of 1024"
        var items = Charter_V1_TaskResult(); items.taskID = "run-1/generate-0"; items.items = [g, r, o, sc, failed]
        return [("register", .register(register)), ("task", .task(task)), ("model_announce", .modelAnnounce(announce)), ("error", .error(error)),
                ("chunk_request", .chunkRequest(request)), ("chunk_reply_missing", .chunkReply(missing)), ("model_ready", .modelReady(ready)), ("task_result", .taskResult(result)),
                ("task_generate", .task(generate)), ("task_revise", .task(revise)), ("task_options", .task(options)), ("task_score", .task(score)),
                ("task_result_items", .taskResult(items)), ("register_kernel", .register(registerKernel)), ("task_result_values", .taskResult(valued))]
    }

    /// Set CHARTER_WRITE_FIXTURES=1 to write the fixtures anew after a deliberate schema change.
    func testGoldenFramesDecodeToTheirMessages() throws {
        for (name, message) in Self.golden() {
            let url = Self.fixtures.appendingPathComponent("\(name).bin")
            if ProcessInfo.processInfo.environment["CHARTER_WRITE_FIXTURES"] == "1" { try Wire.header(message).write(to: url) }
            let decoded = try Wire.decode([try Data(contentsOf: url)])
            XCTAssertEqual(decoded.message, message, name)
            XCTAssertTrue(decoded.bulk.isEmpty)
        }
    }

    /// An absent reward model is absent on the wire, not a score of 0.
    func testAScoreThatWasNotComputedStaysAbsent() throws {
        guard case .taskResult(let r) = try Wire.decode([try Data(contentsOf: Self.fixtures.appendingPathComponent("task_result.bin"))]).message else {
            return XCTFail("task_result.bin is not a TaskResult")
        }
        XCTAssertTrue(r.samples[0].hasHelpfulnessScore)
        XCTAssertFalse(r.samples[0].hasSafetyScore)
    }

    func testBulkFramesFollowTheHeaderUntouched() throws {
        var reply = Charter_V1_ChunkReply()
        reply.model = "policy"; reply.version = 2; reply.index = 5; reply.crc32C = 99
        let bulk = Data((0..<1000).map { UInt8($0 % 251) })
        let decoded = try Wire.decode([Wire.header(.chunkReply(reply)), bulk])
        XCTAssertEqual(decoded.message, .chunkReply(reply))
        XCTAssertEqual(Array(decoded.bulk), [bulk])
    }

    func testBadHeadersAreNamed() throws {
        XCTAssertThrowsError(try Wire.decode([])) { XCTAssertEqual($0 as? Wire.DecodeError, .empty) }
        XCTAssertThrowsError(try Wire.decode([Data([0xFF, 0xFF, 0xFF])])) {
            guard case .malformed = $0 as? Wire.DecodeError else { return XCTFail("\($0)") }
        }
        var future = Envelope()
        future.protocolVersion = 5
        future.heartbeat = Charter_V1_Heartbeat()
        XCTAssertThrowsError(try Wire.decode([try future.serializedData()])) {
            XCTAssertEqual($0 as? Wire.DecodeError, .versionMismatch(5))
            XCTAssertEqual(($0 as! Wire.DecodeError).reply.code, .versionMismatch)
            XCTAssertEqual("\($0)", "speaks protocol 4, got 5")
        }
        var empty = Envelope()
        empty.protocolVersion = Wire.protocolVersion
        XCTAssertThrowsError(try Wire.decode([try empty.serializedData()])) { XCTAssertEqual($0 as? Wire.DecodeError, .unknownMessage) }
    }
}
