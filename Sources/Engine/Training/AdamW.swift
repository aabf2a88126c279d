#if canImport(Glibc)
import Glibc
#endif

/// Learning rate per step: linear warm-up from 0, then cosine or linear decay to `minRatio * peak`
/// at `totalSteps`, or constant.
public struct LRSchedule: Codable, Sendable, Equatable {
    public enum Decay: String, Codable, Sendable { case cosine, linear, constant }
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var decay: Decay
    public var minRatio: Float

    public init(peak: Float, warmupSteps: Int = 0, totalSteps: Int = 1, decay: Decay = .cosine, minRatio: Float = 0.1) {
        self.peak = peak; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps; self.decay = decay; self.minRatio = minRatio
    }

    /// The rate for 0-based `step`.
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step + 1) / Float(warmupSteps) }
        let span = max(totalSteps - warmupSteps, 1)
        let progress = min(Float(step - warmupSteps) / Float(span), 1)
        let floor = peak * minRatio
        switch decay {
        case .constant: return peak
        case .linear: return floor + (peak - floor) * (1 - progress)
        case .cosine: return floor + (peak - floor) * 0.5 * (1 + cosf(Float.pi * progress))
        }
    }
}

/// AdamW with decoupled weight decay and bias correction, over one flat parameter buffer.
/// Moments are two flat buffers of the same layout, so saving and restoring them is two copies.
public final class AdamW: @unchecked Sendable {
    public struct Settings: Codable, Sendable, Equatable {
        public var beta1: Float = 0.9
        public var beta2: Float = 0.999
        public var eps: Float = 1e-8
        public var weightDecay: Float = 0
        /// Global gradient-norm clip; nil: no clipping.
        public var clipNorm: Float? = 1
        public init(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0, clipNorm: Float? = 1) {
            self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay; self.clipNorm = clipNorm
        }
    }

    public let settings: Settings
    public let m: UnsafeMutableBufferPointer<Float>
    public let v: UnsafeMutableBufferPointer<Float>
    /// Updates applied so far.
    public var step = 0
    /// Updates refused because the gradient norm was not finite (NaN or infinity).
    public private(set) var skippedSteps = 0
    /// Element ranges that receive weight decay (matrices; not norm gains).
    public let decayRanges: [Range<Int>]

    public init(count: Int, settings: Settings, decayRanges: [Range<Int>]) {
        self.settings = settings
        self.decayRanges = decayRanges
        m = .allocate(capacity: count); m.initialize(repeating: 0)
        v = .allocate(capacity: count); v.initialize(repeating: 0)
    }

    deinit { m.deallocate(); v.deallocate() }

    /// The 2-D tensors of a layout: where weight decay applies.
    public static func matrixRanges(_ layout: ParameterLayout) -> [Range<Int>] {
        layout.slots.filter { $0.shape.count == 2 }.map { $0.offset..<$0.offset + $0.count }
    }

    public static func norm(_ g: UnsafeMutableBufferPointer<Float>) -> Float {
        var s = 0.0
        var i = 0
        while i < g.count {
            let n = min(1 << 16, g.count - i)
            s += Double(VectorMath.dot(g.baseAddress! + i, g.baseAddress! + i, n))
            i += n
        }
        return Float(s.squareRoot())
    }

    /// Clips `grads` in place to the global norm, then applies one update at learning rate `lr`.
    /// Returns the gradient norm before clipping. A gradient whose norm is not finite changes
    /// nothing (parameters, moments, step count) and is counted in `skippedSteps`.
    @discardableResult
    public func update(params: UnsafeMutableBufferPointer<Float>, grads: UnsafeMutableBufferPointer<Float>, lr: Float) -> Float {
        precondition(params.count == m.count && grads.count == m.count, "AdamW: buffer sizes differ")
        let gradNorm = Self.norm(grads)
        guard gradNorm.isFinite else { skippedSteps += 1; return gradNorm }
        if let clip = settings.clipNorm, gradNorm > clip {
            VectorMath.scale(grads.baseAddress!, clip / gradNorm, grads.count)
        }
        step += 1
        // Decoupled decay first, as torch.optim.AdamW does: p *= 1 - lr * wd.
        if settings.weightDecay != 0 {
            for r in decayRanges { VectorMath.scale(params.baseAddress! + r.lowerBound, 1 - lr * settings.weightDecay, r.count) }
        }
        let b1 = settings.beta1, b2 = settings.beta2
        let c1 = 1 - powf(b1, Float(step)), c2 = 1 - powf(b2, Float(step))
        let p = params.baseAddress!, g = grads.baseAddress!, mm = m.baseAddress!, vv = v.baseAddress!
        let stepSize = lr / c1, invC2 = 1 / c2, eps = settings.eps
        // Two cores, contiguous blocks: each element's update is independent of the others.
        let block = 1 << 16
        Parallel.forEach((params.count + block - 1) / block) { t in
            typealias V8 = SIMD8<Float>
            var i = t * block
            let end = min(i + block, params.count)
            while i + 8 <= end {
                let gi = VectorMath.load(g + i)
                let mi = b1 * VectorMath.load(mm + i) + (1 - b1) * gi
                let vi = b2 * VectorMath.load(vv + i) + (1 - b2) * gi * gi
                VectorMath.store(mi, mm + i)
                VectorMath.store(vi, vv + i)
                VectorMath.store(VectorMath.load(p + i) - stepSize * mi / ((vi * invC2).squareRoot() + eps), p + i)
                i += 8
            }
            while i < end {
                let gi = g[i]
                mm[i] = b1 * mm[i] + (1 - b1) * gi
                vv[i] = b2 * vv[i] + (1 - b2) * gi * gi
                p[i] -= stepSize * mm[i] / ((vv[i] * invC2).squareRoot() + eps)
                i += 1
            }
        }
        return gradNorm
    }
}
