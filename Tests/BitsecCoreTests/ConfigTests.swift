import Testing
import Glibc
import BitsecCore

@Suite struct ConfigTests {
    @Test func emptyConfigurationOpens() throws {
        let rt = try Runtime.open(config: "{}")
        #expect(rt.redis == nil)
        expectError(.notConfigured, "redis") { _ = try rt.requireRedis() }
    }

    @Test func unknownFieldsAreNamed() {
        expectError(.config, "unknown field tokenz") { _ = try Runtime.open(config: #"{"tokenz": {}}"#) }
        expectError(.config, "unknown field redis.hots") { _ = try Runtime.open(config: #"{"redis": {"hots": "x"}}"#) }
        expectError(.config, "unknown field redis.password.fiel") {
            _ = try Runtime.open(config: #"{"redis": {"password": {"fiel": "/x"}}}"#)
        }
    }

    @Test func wrongTypesAndRangesAreNamed() {
        expectError(.config, "redis.port must be an integer") { _ = try Runtime.open(config: #"{"redis": {"port": "6379"}}"#) }
        expectError(.config, "redis.port must be between 1 and 65535") { _ = try Runtime.open(config: #"{"redis": {"port": 70000}}"#) }
        expectError(.config, "redis must be an object") { _ = try Runtime.open(config: #"{"redis": 1}"#) }
        expectError(.config, "configuration must be an object") { _ = try Runtime.open(config: "[]") }
        expectError(.config, "unix_socket or host/port") {
            _ = try Runtime.open(config: #"{"redis": {"unix_socket": "/tmp/r.sock", "port": 1}}"#)
        }
    }

    @Test func invalidJSONIsAConfigError() {
        expectError(.config, "duplicate member name") { _ = try Runtime.open(config: #"{"redis": {}, "redis": {}}"#) }
        expectError(.config, "invalid JSON") { _ = try Runtime.open(config: #"{"redis": "#) }
    }

    @Test func inlineSecretsNeedTheOptIn() throws {
        expectError(.config, "inline secrets are refused") {
            _ = try Runtime.open(config: #"{"redis": {"password": {"value": "hunter2"}}}"#)
        }
        let rt = try Runtime.open(config: #"{"allow_inline_secrets": true, "redis": {"password": {"value": "hunter2"}}}"#)
        #expect(rt.redis?.config.password != nil)
    }

    @Test func secretsFromEnvironmentAndFile() throws {
        setenv("BITSEC_TEST_SECRET_HEX", "  00ff10  \n", 1)
        let o = try ConfigObject(try JSONReader.parse(#"{"s": {"env": "BITSEC_TEST_SECRET_HEX", "encoding": "hex"}}"#), path: "")
        let s = try #require(try SecretRef.read(o, "s", context: .init(allowInlineSecrets: false)))
        #expect(s.bytes.bytes == [0x00, 0xFF, 0x10])

        let path = "/tmp/bitsec-secret-\(getpid())"
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        _ = "c2VjcmV0\n".withCString { write(fd, $0, 9) }
        close(fd)
        defer { unlink(path) }
        let o2 = try ConfigObject(try JSONReader.parse(#"{"s": {"file": "\#(path)", "encoding": "base64"}}"#), path: "x")
        let s2 = try #require(try SecretRef.read(o2, "s", context: .init(allowInlineSecrets: false)))
        #expect(s2.bytes.bytes == Array("secret".utf8))
        #expect(!"\(s2)".contains("secret") || "\(s2)".contains(path))
    }

    @Test func secretErrorsNeverQuoteTheSecret() {
        setenv("BITSEC_TEST_BAD_HEX", "not-hex-topsecret", 1)
        expectError(.config, "not valid hex") {
            let o = try ConfigObject(try JSONReader.parse(#"{"s": {"env": "BITSEC_TEST_BAD_HEX", "encoding": "hex"}}"#), path: "")
            _ = try SecretRef.read(o, "s", context: .init(allowInlineSecrets: false))
        }
        do {
            let o = try ConfigObject(try JSONReader.parse(#"{"s": {"env": "BITSEC_TEST_BAD_HEX", "encoding": "hex"}}"#), path: "")
            _ = try SecretRef.read(o, "s", context: .init(allowInlineSecrets: false))
        } catch {
            #expect(!error.detail.contains("topsecret"))
        }
        expectError(.config, "BITSEC_TEST_UNSET_VARIABLE is not set") {
            let o = try ConfigObject(try JSONReader.parse(#"{"s": {"env": "BITSEC_TEST_UNSET_VARIABLE"}}"#), path: "")
            _ = try SecretRef.read(o, "s", context: .init(allowInlineSecrets: false))
        }
        expectError(.config, "exactly one of file, env, value") {
            let o = try ConfigObject(try JSONReader.parse(#"{"s": {"env": "A", "file": "/b"}}"#), path: "")
            _ = try SecretRef.read(o, "s", context: .init(allowInlineSecrets: true))
        }
        expectError(.config, "cannot open /nonexistent/secret") {
            let o = try ConfigObject(try JSONReader.parse(#"{"s": {"file": "/nonexistent/secret"}}"#), path: "")
            _ = try SecretRef.read(o, "s", context: .init(allowInlineSecrets: false))
        }
    }

    @Test func describeNamesSectionsWithoutSecrets() throws {
        let rt = try Runtime.open(config: #"{"allow_inline_secrets": true, "redis": {"port": 7000, "password": {"value": "hunter2"}}}"#)
        let text = String(decoding: rt.describe().serialized, as: UTF8.self)
        #expect(text.contains("\"endpoint\":\"127.0.0.1:7000\""))
        #expect(text.contains("\"auth\":true"))
        #expect(!text.contains("hunter2"))
    }
}
