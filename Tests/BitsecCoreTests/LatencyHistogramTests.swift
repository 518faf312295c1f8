import Testing
import Glibc
import Dispatch
import BitsecCore

/// The latency histograms: bucket placement, exposition, sampling weights, configuration,
/// and exact totals under concurrent recording (no lock on the recording path).
@Suite struct LatencyHistogramTests {
    /// The value of one exposition line `name{labels} value` (nil when absent).
    static func value(_ text: String, _ series: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return String(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test func observationsLandInTheirBucketAndAreCumulative() {
        let h = LatencyHistograms(settings: MetricsSettings(histograms: .on))
        h.record(.permissionCheck, nanos: 0)          // le 1e-06
        h.record(.permissionCheck, nanos: 1_000)      // le 1e-06 (bounds are inclusive)
        h.record(.permissionCheck, nanos: 1_001)      // le 2.5e-06
        h.record(.permissionCheck, nanos: 30_000)     // le 5e-05
        h.record(.permissionCheck, nanos: 2_000_000_000)  // +Inf only
        let s = h.snapshot(.permissionCheck)
        #expect(s.count == 5)
        #expect(s.sumNanos == 2_000_032_001)
        let t = h.prometheusText([.permissionCheck], redis: false)
        let pid = "pid=\"\(getpid())\""
        let b = #"bitsec_operation_duration_seconds_bucket{operation="permission_check","# + pid + ",le="
        #expect(Self.value(t, b + #""1e-06"}"#) == "2")
        #expect(Self.value(t, b + #""2.5e-06"}"#) == "3")
        #expect(Self.value(t, b + #""2.5e-05"}"#) == "3")
        #expect(Self.value(t, b + #""5e-05"}"#) == "4")
        #expect(Self.value(t, b + #""1"}"#) == "4")
        #expect(Self.value(t, b + #""+Inf"}"#) == "5")
        #expect(Self.value(t, #"bitsec_operation_duration_seconds_count{operation="permission_check","# + pid + "}") == "5")
        #expect(Self.value(t, #"bitsec_operation_duration_seconds_sum{operation="permission_check","# + pid + "}") == "2.000032001")
        #expect(t.contains("# TYPE bitsec_operation_duration_seconds histogram\n"))
        // Operations are kept apart; the Redis family is only there when asked for.
        #expect(h.snapshot(.tokenVerify).count == 0)
        #expect(!t.contains("bitsec_redis_roundtrip_seconds"))
        #expect(h.prometheusText([], redis: true).contains("bitsec_redis_roundtrip_seconds_count{\(pid)} 0\n"))
    }

    @Test func startAndFinishTimeACall() {
        let h = LatencyHistograms(settings: MetricsSettings(histograms: .on))
        let t0 = h.start(.auditEmit)
        #expect(t0 != 0)
        usleep(2_000)
        h.finish(.auditEmit, t0)
        let s = h.snapshot(.auditEmit)
        #expect(s.count == 1)
        #expect(s.sumNanos >= 2_000_000)
        // The 1 ms bucket and below are empty: the call slept 2 ms.
        #expect(s.buckets[..<10].allSatisfy { $0 == 0 })
    }

    @Test func offRecordsNothingAndPrintsNothing() {
        let h = LatencyHistograms(settings: MetricsSettings(histograms: .off))
        for _ in 0..<100 { h.finish(.rateLimitTake, h.start(.rateLimitTake)) }
        #expect(h.snapshot(.rateLimitTake).count == 0)
        #expect(h.prometheusText([.rateLimitTake], redis: true) == "")
    }

    @Test func sampledTimesOneCallInNAndWeighsItN() {
        let h = LatencyHistograms(settings: MetricsSettings(histograms: .sampled, sampleEvery: 8))
        var measured = 0
        for _ in 0..<64 {
            let t0 = h.start(.fieldEncrypt)
            if t0 != 0 { measured += 1 }
            h.finish(.fieldEncrypt, t0)
        }
        // One thread, one row: exactly every eighth call, each counted eight times.
        #expect(measured == 8)
        #expect(h.snapshot(.fieldEncrypt).count == 64)
    }

    @Test func concurrentRecordingLosesNoObservation() {
        let h = LatencyHistograms(settings: MetricsSettings(histograms: .on))
        let threads = 8, each = 20_000
        DispatchQueue.concurrentPerform(iterations: threads) { i in
            for k in 0..<each { h.record(.tokenVerify, nanos: UInt64((i &* each &+ k) % 3_000)) }
        }
        let s = h.snapshot(.tokenVerify)
        #expect(s.count == UInt64(threads * each))
        var sum: UInt64 = 0
        for i in 0..<threads { for k in 0..<each { sum += UInt64((i * each + k) % 3_000) } }
        #expect(s.sumNanos == sum)
    }

    @Test func configuration() throws {
        let rt = try Runtime.open(config: #"{"metrics": {"histograms": "sampled", "sample_every": 64}}"#)
        defer { rt.shutdown() }
        #expect(rt.latency.settings == MetricsSettings(histograms: .sampled, sampleEvery: 64))
        #expect(rt.describe()["sections"]?["metrics"]?["histograms"]?.stringValue == "sampled")
        let d = try Runtime.open(config: "{}")
        defer { d.shutdown() }
        #expect(d.latency.settings == MetricsSettings(histograms: .sampled, sampleEvery: 16))
        for (bad, field) in [(#"{"histograms": "always"}"#, "metrics.histograms"),
                             (#"{"sample_every": 12}"#, "metrics.sample_every"),
                             (#"{"sample_every": 1}"#, "metrics.sample_every"),
                             (#"{"sample_every": 131072}"#, "metrics.sample_every"),
                             (#"{"buckets": [1]}"#, "metrics.buckets")] {
            #expect {
                _ = try Runtime.open(config: #"{"metrics": \#(bad)}"#)
            } throws: { e in
                guard let e = e as? BitsecError else { return false }
                return e.status == .config && e.detail.contains(field)
            }
        }
    }

    @Test func redisRoundTripsAreTimed() throws {
        guard let cfg = TestRedis.config() else { return }
        let rt = try Runtime.open(config: cfg)
        defer { rt.shutdown() }
        _ = try #require(rt.redis).ping()
        _ = try #require(rt.redis).ping()
        #expect(rt.latency.snapshot(.redisRoundTrip).count >= 2)
        let t = rt.metricsText()
        #expect(t.contains("# TYPE bitsec_redis_roundtrip_seconds histogram\n"))
        #expect(!t.contains("bitsec_operation_duration_seconds"))  // no capability configured
        // Off: not timed, not printed.
        let off = try Runtime.open(config: String(cfg.dropLast()) + #", "metrics": {"histograms": "off"}}"#)
        defer { off.shutdown() }
        _ = try #require(off.redis).ping()
        #expect(off.latency.snapshot(.redisRoundTrip).count == 0)
        #expect(!off.metricsText().contains("_seconds"))  // no histogram (the ABI call count remains)
    }
}
