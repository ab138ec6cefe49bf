-- vsrbus.lua: a Wireshark / tshark dissector for the vsrbus (Iggy consensus bus) frames.
--
-- Every frame is a 256-byte little-endian header plus size-256 body bytes (docs/wire.md).
-- Over TCP the dissector claims the vsrbus ports (preference "tcp_ports", default
-- 8090,9000-9009) and, as a heuristic on any other port, a stream whose first header looks like a
-- vsrbus header (size in range, command <= 29, reserved_frame all zero). Frames that span
-- segments are reassembled. Over QUIC, give Wireshark the TLS key log
-- (SSLKEYLOGFILE, option tls.keylog_file): decrypted streams of connections with ALPN
-- iggy.consensus.v1 are decoded as vsrbus.
--
-- Use: tshark -X lua_script:contrib/wireshark/vsrbus.lua -r capture.pcap -Y vsrbus
-- or copy this file into ~/.local/lib/wireshark/plugins/.

local HEADER = 256
local MAX_SIZE = 64 * 1024 * 1024

local vsr = Proto("vsrbus", "vsrbus consensus bus")

local commands = {
  [0] = "Reserved", [1] = "Ping", [2] = "Pong", [3] = "PingClient", [4] = "PongClient",
  [5] = "Request", [6] = "Prepare", [7] = "PrepareOk", [8] = "Reply", [9] = "Commit",
  [10] = "StartViewChange", [11] = "DoViewChange", [12] = "StartView", [13] = "Eviction",
  [14] = "ReplicaHello", [15] = "ReplicaChallenge", [16] = "ReplicaFinish",
  [17] = "RequestStartView", [18] = "RequestPrepares", [19] = "RepairPrepare",
  [20] = "RepairDone", [21] = "RangeEvicted", [22] = "RequestStateTransfer",
  [23] = "StateTransferTarget", [24] = "RequestStateChunk", [25] = "StateChunk",
  [26] = "ForwardRegister", [27] = "ForwardRegisterResult", [28] = "ForwardLogout",
  [29] = "ForwardLogoutResult",
}

local handshake_status = {
  [0] = "Ok", [1] = "UnknownCommand", [2] = "ClusterMismatch", [3] = "DirectionalRule",
  [4] = "AuthRequired", [5] = "MacMismatch",
}

local f = vsr.fields
f.checksum      = ProtoField.bytes("vsrbus.checksum", "Checksum")
f.checksum_body = ProtoField.bytes("vsrbus.checksum_body", "Body checksum")
f.cluster       = ProtoField.bytes("vsrbus.cluster", "Cluster")
f.size          = ProtoField.uint32("vsrbus.size", "Size", base.DEC)
f.view          = ProtoField.uint32("vsrbus.view", "View", base.DEC)
f.release       = ProtoField.uint32("vsrbus.release", "Release", base.DEC)
f.command       = ProtoField.uint8("vsrbus.command", "Command", base.DEC, commands)
f.replica       = ProtoField.uint8("vsrbus.replica", "Replica", base.DEC)
f.client        = ProtoField.bytes("vsrbus.client", "Client")
f.request       = ProtoField.uint64("vsrbus.request", "Request number", base.DEC)
f.session       = ProtoField.uint64("vsrbus.session", "Session", base.DEC)
f.operation     = ProtoField.uint8("vsrbus.operation", "Operation", base.DEC)
f.timestamp     = ProtoField.uint64("vsrbus.timestamp", "Timestamp", base.DEC)
f.op            = ProtoField.uint64("vsrbus.op", "Op", base.DEC)
f.commit        = ProtoField.uint64("vsrbus.commit", "Commit", base.DEC)
f.parent        = ProtoField.bytes("vsrbus.parent", "Parent")
f.prepare_checksum = ProtoField.bytes("vsrbus.prepare_checksum", "Prepare checksum")
f.group         = ProtoField.uint64("vsrbus.group", "Group", base.DEC)
f.status        = ProtoField.uint32("vsrbus.status", "Status", base.DEC)
f.reason        = ProtoField.uint8("vsrbus.eviction_reason", "Eviction reason", base.DEC)
f.nonce         = ProtoField.bytes("vsrbus.nonce", "Nonce")
f.mac           = ProtoField.bytes("vsrbus.mac", "MAC")
f.hs_status     = ProtoField.uint8("vsrbus.handshake_status", "Handshake status", base.DEC,
                                   handshake_status)
f.from_op       = ProtoField.uint64("vsrbus.from_op", "From op", base.DEC)
f.to_op         = ProtoField.uint64("vsrbus.to_op", "To op", base.DEC)
f.body          = ProtoField.bytes("vsrbus.body", "Body")

vsr.prefs.tcp_ports = Pref.range("TCP ports", "8090,9000-9009",
                                 "TCP ports decoded as vsrbus without the heuristic", 65535)

local function u64(tvb, off) return tvb(off, 8):le_uint64() end

-- Command-specific fields (bytes 128..256), for the common commands.
local function add_command_fields(tvb, t, cmd)
  if cmd == 5 then -- Request
    t:add_le(f.client, tvb(128, 16))
    t:add_le(f.timestamp, tvb(160, 8))
    t:add_le(f.request, tvb(168, 8))
    t:add_le(f.operation, tvb(176, 1))
    t:add_le(f.session, tvb(184, 8))
  elseif cmd == 8 then -- Reply
    t:add_le(f.client, tvb(160, 16))
    t:add_le(f.op, tvb(176, 8))
    t:add_le(f.commit, tvb(184, 8))
    t:add_le(f.timestamp, tvb(192, 8))
    t:add_le(f.request, tvb(200, 8))
    t:add_le(f.operation, tvb(208, 1))
    t:add_le(f.status, tvb(216, 4))
  elseif cmd == 6 or cmd == 19 then -- Prepare, RepairPrepare
    t:add_le(f.client, tvb(128, 16))
    t:add_le(f.parent, tvb(144, 16))
    t:add_le(f.op, tvb(176, 8))
    t:add_le(f.commit, tvb(184, 8))
    t:add_le(f.timestamp, tvb(192, 8))
    t:add_le(f.request, tvb(200, 8))
    t:add_le(f.operation, tvb(208, 1))
    t:add_le(f.group, tvb(216, 8))
  elseif cmd == 7 then -- PrepareOk
    t:add_le(f.parent, tvb(128, 16))
    t:add_le(f.prepare_checksum, tvb(144, 16))
    t:add_le(f.op, tvb(160, 8))
    t:add_le(f.commit, tvb(168, 8))
    t:add_le(f.request, tvb(184, 8))
    t:add_le(f.operation, tvb(192, 1))
  elseif cmd == 9 then -- Commit
    t:add_le(f.timestamp, tvb(144, 8))
    t:add_le(f.commit, tvb(152, 8))
    t:add_le(f.group, tvb(168, 8))
  elseif cmd == 13 then -- Eviction
    t:add_le(f.client, tvb(128, 16))
    t:add_le(f.reason, tvb(255, 1))
  elseif cmd == 14 then -- ReplicaHello
    t:add(f.nonce, tvb(128, 32))
  elseif cmd == 15 then -- ReplicaChallenge
    t:add(f.nonce, tvb(128, 32))
    t:add(f.mac, tvb(160, 32))
    t:add_le(f.hs_status, tvb(192, 1))
  elseif cmd == 16 then -- ReplicaFinish
    t:add(f.mac, tvb(160, 32))
  elseif cmd == 18 then -- RequestPrepares
    t:add(f.nonce, tvb(128, 16))
    t:add_le(f.from_op, tvb(144, 8))
    t:add_le(f.to_op, tvb(152, 8))
  end
end

-- True when the bytes at |off| look like the start of a vsrbus header: size in range, command
-- known, reserved_frame (62..128) zero as far as the segment goes. A segment shorter than a
-- header is judged on what it has (at least through the command byte), so a header split over
-- segments is still recognised and reassembled.
local function looks_like_header(tvb, off)
  local have = tvb:len() - off
  if have < 62 then return false end
  local size = tvb(off + 48, 4):le_uint()
  if size < HEADER or size > MAX_SIZE then return false end
  if tvb(off + 60, 1):uint() > 29 then return false end
  local stop = math.min(128, have)
  for i = 62, stop - 1 do
    if tvb(off + i, 1):uint() ~= 0 then return false end
  end
  return true
end

local function dissect_frame(tvb, pinfo, tree)
  local size = tvb(48, 4):le_uint()
  local cmd = tvb(60, 1):uint()
  local name = commands[cmd] or ("unknown " .. cmd)
  pinfo.cols.protocol = "vsrbus"
  local info = tostring(pinfo.cols.info)
  if info:find("^vsrbus") then
    pinfo.cols.info:append(", " .. name)
  else
    pinfo.cols.info:set("vsrbus " .. name)
  end
  local t = tree:add(vsr, tvb(0, size), "vsrbus " .. name .. ", " .. size .. " bytes")
  t:add(f.checksum, tvb(0, 16))
  t:add(f.checksum_body, tvb(16, 16))
  t:add(f.cluster, tvb(32, 16))
  t:add_le(f.size, tvb(48, 4))
  t:add_le(f.view, tvb(52, 4))
  t:add_le(f.release, tvb(56, 4))
  t:add_le(f.command, tvb(60, 1))
  t:add_le(f.replica, tvb(61, 1))
  add_command_fields(tvb, t, cmd)
  if size > HEADER then t:add(f.body, tvb(HEADER, size - HEADER)) end
  return size
end

-- Dissects every whole frame in |tvb|; asks the TCP or QUIC reassembly for more bytes when a
-- frame (or its header) continues in a later segment.
function vsr.dissector(tvb, pinfo, tree)
  if not looks_like_header(tvb, 0) then return 0 end
  local off, len = 0, tvb:len()
  while off < len do
    local have = len - off
    if have < HEADER then
      pinfo.desegment_offset = off
      pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
      return len
    end
    if not looks_like_header(tvb, off) then return off end
    local size = tvb(off + 48, 4):le_uint()
    if have < size then
      pinfo.desegment_offset = off
      pinfo.desegment_len = size - have
      return len
    end
    dissect_frame(tvb(off, size):tvb(), pinfo, tree)
    off = off + size
  end
  return off
end

-- Heuristic on TCP (any port) and on decrypted QUIC stream data.
local function heuristic(tvb, pinfo, tree)
  if not looks_like_header(tvb, 0) then return false end
  vsr.dissector(tvb, pinfo, tree)
  pinfo.conversation = vsr
  return true
end

local registered = nil
local function register_ports()
  local tcp = DissectorTable.get("tcp.port")
  if registered then tcp:remove(registered, vsr) end
  tcp:add(vsr.prefs.tcp_ports, vsr)
  registered = vsr.prefs.tcp_ports
end
function vsr.prefs_changed() register_ports() end
register_ports()

vsr:register_heuristic("tcp", heuristic)
-- Wireshark 4.0 hands decrypted QUIC stream data to the dissector registered for the
-- connection's ALPN in "quic.proto": vsrbus's is iggy.consensus.v1. A connection without ALPN
-- (the mainline default) is not routed by Wireshark 4.0; capture with a client that offers the
-- ALPN (vsrbus ping --quic --quic-alpn iggy.consensus.v1).
local quic_proto = DissectorTable.get("quic.proto")
if quic_proto then quic_proto:add("iggy.consensus.v1", vsr) end
