# Asks dalli where each key goes: usage `ruby dalli_oracle.rb KEYS_FILE SERVER...`, servers
# as the app passes them to Dalli::Client.new ("host:port" or "host:port:weight").
# Each key (one a line) goes through Client#get: the real key validation and ring; the
# server's alive? (which would connect) answers true and its request records the server
# and stops there, so nothing touches the network. Prints per key the index of the chosen
# server in the app's list, or -1 when the client refused the key.
# With `--set` first (live_check.py), the client really stores each key instead and prints
# 1 per stored key, -1 per refused one.
# With PLACEMENT_TIMING=1 it prints only keys_per_s=N: the rate of the ring's own
# server_for_key over the keys, repeated for at least a second (bench/placement.py).
require 'dalli'

if ARGV[0] == '--set'
  client = Dalli::Client.new(ARGV[2..])
  File.foreach(ARGV[1], chomp: true, encoding: 'UTF-8') do |key|
    puts(client.set(key, '1', 0, raw: true) ? 1 : -1)
  rescue ArgumentError, Dalli::DalliError
    puts(-1)
  end
  exit
end

class Stop < StandardError; end

$chosen = nil
module Recording
  def alive?
    true
  end

  def request(*)
    $chosen = self
    raise Stop
  end
end
Dalli::Protocol::Binary.prepend(Recording)

client = Dalli::Client.new(ARGV[1..])
if ENV['PLACEMENT_TIMING'] == '1'
  ring = client.send(:ring)
  keys = File.readlines(ARGV[0], chomp: true, encoding: 'UTF-8')
  clock = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
  start = clock.call
  placed = 0
  while clock.call - start < 1.0
    keys.each { |key| ring.server_for_key(key) }
    placed += keys.size
  end
  puts "keys_per_s=#{placed / (clock.call - start)}"
  exit
end
servers = client.send(:ring).servers
out = []
File.foreach(ARGV[0], chomp: true, encoding: 'UTF-8') do |key|
  $chosen = nil
  begin
    client.get(key)
  rescue Stop
    nil
  rescue ArgumentError, Dalli::DalliError
    $chosen = nil
  end
  out << ($chosen.nil? ? -1 : servers.index { |s| s.equal?($chosen) })
end
puts out
