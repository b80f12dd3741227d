# frozen_string_literal: true

# The localvmss Vagrant lab as data, for the Vagrantfile (and the tests, which run it with plain
# ruby): reads and checks inventory.json, derives what each machine needs (static routes, each KVM
# host's routed guest network, SSH trust from the controller's root to the hosts, the controller's
# localvmssd.toml) and writes those files into a state directory that the Vagrantfile uploads.
# The provisioning scripts in provision/ are static and only install these files, so no value
# from the inventory is ever pasted into a shell command. The whole inventory is checked before
# anything is written: a bad one is one line saying what and why, and changes nothing.
#
# By hand: ruby vagrant/lib/localvmss_lab.rb plan [INVENTORY]           (the plan as JSON)
#          ruby vagrant/lib/localvmss_lab.rb prepare INVENTORY STATE_DIR (write the files)

require "fileutils"
require "ipaddr"
require "json"
require "rexml/document"
require "socket"

module LocalvmssLab
  # A bad inventory or a missing tool; the message is one line.
  class Error < StandardError; end

  # The project's test address space (RFC 2544): every lab subnet lies inside it.
  ALLOWED = IPAddr.new("198.18.0.0/15")
  NAME = /\A[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?\z/ # as localvmss host names (model.NAME_PATTERN)
  NAME_RULE = "1-32 lower-case letters, digits or '-', starting with a letter, not ending with '-'"
  NET_NAME = /\A[A-Za-z0-9_-]{1,32}\z/
  ZONE = /\A[A-Za-z0-9-]{1,16}\z/
  BOX = %r{\A[A-Za-z0-9._/-]{1,128}\z}
  OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
  IPV4 = /\A#{OCTET}(?:\.#{OCTET}){3}\z/
  MIN_MEMORY_MIB = 1024

  # The checkout is rsynced to the controller without the venv, caches, git and the lab's keys.
  CHECKOUT_GUEST_PATH = "/opt/localvmss"
  CHECKOUT_EXCLUDE = [".venv/", ".cache/", ".git/", "/vagrant/.lab/", "/vagrant/.vagrant/"].freeze
  GUEST_BRIDGE = "lvmssbr0"
  CONTROLLER_KEY_COMMENT = "localvmss-lab-controller"
  # Outside /root, so a daemon unit with ProtectHome= can still use them.
  CONTROLLER_KEY_PATH = "/etc/localvmss/ssh/id_ed25519"
  KNOWN_HOSTS_PATH = "/etc/localvmss/ssh/known_hosts"

  TOP_KEYS = { "box" => true, "rack" => true, "guest_network" => true, "controller" => true,
               "hosts" => true, "comment" => false }.freeze
  RACK_KEYS = { "libvirt_network" => true, "subnet" => true }.freeze
  CONTROLLER_KEYS = { "name" => true, "address" => true, "memory" => true, "cpus" => true }.freeze
  HOST_KEYS = { "name" => true, "address" => true, "zone" => true, "guest_subnet" => true,
                "memory" => true, "cpus" => true }.freeze

  # Reads inventory.json into a checked, normalised Hash (string keys, canonical subnets).
  module Inventory
    module_function

    def load(path)
      text = begin
        File.read(path)
      rescue SystemCallError => e
        raise Error, "cannot read the inventory: #{e.message}"
      end
      data = begin
        JSON.parse(text)
      rescue JSON::ParserError => e
        raise Error, "#{path} is not valid JSON: #{e.message.lines.first.to_s.strip[0, 120]}"
      end
      check(data, File.basename(path))
    end

    def check(data, where = "inventory")
      keys(data, where, TOP_KEYS)
      string(data["comment"], "#{where}: comment", /\A.{0,500}\z/m, "at most 500 characters") if data.key?("comment")
      rack_in = data["rack"]
      keys(rack_in, "#{where}: rack", RACK_KEYS)
      rack_subnet = subnet(rack_in["subnet"], "#{where}: rack.subnet")
      rack = {
        "libvirt_network" => string(rack_in["libvirt_network"], "#{where}: rack.libvirt_network", NET_NAME,
                                    "letters, digits, '_' or '-', at most 32"),
        "subnet" => cidr(rack_subnet),
        "netmask" => netmask(rack_subnet.prefix),
      }
      controller_in = data["controller"]
      keys(controller_in, "#{where}: controller", CONTROLLER_KEYS)
      hosts_in = data["hosts"]
      unless hosts_in.is_a?(Array) && !hosts_in.empty? && hosts_in.length <= 32
        raise Error, "#{where}: hosts must be a list of 1 to 32 KVM hosts"
      end

      controller = machine(controller_in, "#{where}: controller", rack_subnet)
      hosts = hosts_in.each_with_index.map do |entry, i|
        at = "#{where}: hosts[#{i}]"
        keys(entry, at, HOST_KEYS)
        host = machine(entry, at, rack_subnet)
        host["zone"] = string(entry["zone"], "#{at}.zone", ZONE, "letters, digits or '-', at most 16, e.g. \"1\"")
        guest = subnet(entry["guest_subnet"], "#{at}.guest_subnet")
        raise Error, "#{at}.guest_subnet #{cidr(guest)} must be a /24" unless guest.prefix == 24

        host["guest_subnet"] = cidr(guest)
        host
      end

      unique([controller] + hosts, "name", where)
      unique([controller] + hosts, "address", where)
      subnets = [["rack.subnet", rack["subnet"]]] +
                hosts.each_with_index.map { |h, i| ["hosts[#{i}].guest_subnet", h["guest_subnet"]] }
      subnets.combination(2) do |(name_a, a), (name_b, b)|
        if overlap?(IPAddr.new(a), IPAddr.new(b))
          raise Error, "#{where}: #{name_b} #{b} overlaps #{name_a} #{a}: every subnet needs its own addresses"
        end
      end

      {
        "box" => string(data["box"], "#{where}: box", BOX, "a Vagrant box name such as debian/bookworm64"),
        "rack" => rack,
        "guest_network" => string(data["guest_network"], "#{where}: guest_network", NET_NAME,
                                  "a libvirt network name: letters, digits, '_' or '-', at most 32"),
        "controller" => controller,
        "hosts" => hosts,
      }
    end

    def machine(entry, at, rack_subnet)
      name = string(entry["name"], "#{at}.name", NAME, NAME_RULE)
      {
        "name" => name,
        "address" => address(entry["address"], "#{at}.address", rack_subnet),
        "memory" => integer(entry["memory"], "#{at}.memory", MIN_MEMORY_MIB, "MiB"),
        "cpus" => integer(entry["cpus"], "#{at}.cpus", 1, "CPUs"),
      }
    end

    def keys(value, at, allowed)
      raise Error, "#{at} must be a JSON object" unless value.is_a?(Hash)

      unknown = value.keys - allowed.keys
      unless unknown.empty?
        raise Error, "#{at} has unknown key #{unknown.first.inspect}; known: #{allowed.keys.join(', ')}"
      end

      missing = allowed.select { |k, required| required && !value.key?(k) }.keys
      raise Error, "#{at} lacks #{missing.first.inspect}" unless missing.empty?
    end

    def string(value, at, pattern, rule)
      raise Error, "#{at} must be a string (#{rule}), not #{value.inspect[0, 60]}" unless value.is_a?(String)
      raise Error, "#{at} #{value.inspect[0, 60]} is invalid: #{rule}" unless pattern.match?(value)

      value
    end

    def integer(value, at, min, unit)
      unless value.is_a?(Integer) && value >= min
        raise Error, "#{at} must be a whole number of #{unit}, at least #{min}, not #{value.inspect[0, 60]}"
      end

      value
    end

    def subnet(value, at)
      unless value.is_a?(String)
        raise Error, "#{at} must be a string such as \"198.18.11.0/24\", not #{value.inspect[0, 60]}"
      end

      addr, sep, bits = value.partition("/")
      unless sep == "/" && IPV4.match?(addr) && /\A[0-9]{1,2}\z/.match?(bits) && (16..29).cover?(bits.to_i)
        raise Error, "#{at} #{value.inspect[0, 60]} is not an IPv4 subnet of /16 to /29 such as 198.18.11.0/24"
      end

      net = IPAddr.new(value)
      raise Error, "#{at} #{value} has host bits set; its network is #{cidr(net)}" unless net.to_s == addr
      unless ALLOWED.include?(net.to_range.first) && ALLOWED.include?(net.to_range.last)
        raise Error, "#{at} #{value} is outside 198.18.0.0/15, the only addresses the lab may use"
      end

      net
    end

    def address(value, at, rack_subnet)
      unless value.is_a?(String) && IPV4.match?(value)
        raise Error, "#{at} must be an IPv4 address such as \"198.18.10.11\", not #{value.inspect[0, 60]}"
      end

      ip = IPAddr.new(value)
      range = rack_subnet.to_range
      unless rack_subnet.include?(ip)
        raise Error, "#{at} #{value} is not in the rack subnet #{cidr(rack_subnet)}"
      end
      # The first address is the machine running Vagrant (vagrant-libvirt's host side of the rack).
      if [range.first, range.first.succ, range.last].include?(ip)
        raise Error, "#{at} #{value} is the rack's network, broadcast or host-side address; take another"
      end

      value
    end

    def unique(machines, key, where)
      seen = {}
      machines.each do |m|
        if seen.key?(m[key])
          raise Error, "#{where}: #{m['name']} and #{seen[m[key]]} have the same #{key} #{m[key]}"
        end

        seen[m[key]] = m["name"]
      end
    end

    def overlap?(a, b)
      a.include?(b.to_range.first) || b.include?(a.to_range.first)
    end

    def cidr(net)
      "#{net}/#{net.prefix}"
    end

    def netmask(prefix)
      IPAddr.new("255.255.255.255").mask(prefix).to_s
    end
  end

  module_function

  def ip_at(net, offset)
    IPAddr.new(IPAddr.new(net).to_range.first.to_i + offset, Socket::AF_INET).to_s
  end

  # What each machine gets, KVM hosts first (so `vagrant up --no-parallel` makes them before the
  # controller that connects to them). Pure: the same inventory always gives the same plan.
  def plan(inv)
    hosts = inv["hosts"].map do |h|
      others = inv["hosts"].reject { |o| o["name"] == h["name"] }
      h.merge(
        "role" => "kvm-host",
        "gateway" => ip_at(h["guest_subnet"], 1),
        "netmask" => Inventory.netmask(24),
        "dhcp_start" => ip_at(h["guest_subnet"], 10),
        "dhcp_end" => ip_at(h["guest_subnet"], 250),
        # Guests of one host reach the others' across the rack, as in the single-machine lab.
        "routes" => others.map { |o| [o["guest_subnet"], o["address"]] },
      )
    end
    controller = inv["controller"].merge(
      "role" => "controller",
      "routes" => inv["hosts"].map { |h| [h["guest_subnet"], h["address"]] },
    )
    inv.merge("machines" => hosts + [controller],
              "checkout" => { "guest_path" => CHECKOUT_GUEST_PATH, "exclude" => CHECKOUT_EXCLUDE })
  end

  def network_xml(inv, host)
    doc = REXML::Document.new
    net = doc.add_element("network")
    net.add_element("name").text = inv["guest_network"]
    # route: the host forwards between its guests and the rack without NAT, so the controller's
    # HAProxy and Prometheus reach the guests' own addresses.
    net.add_element("forward", "mode" => "route")
    net.add_element("bridge", "name" => GUEST_BRIDGE, "stp" => "on", "delay" => "0")
    ip = net.add_element("ip", "address" => host["gateway"], "netmask" => host["netmask"])
    ip.add_element("dhcp").add_element("range", "start" => host["dhcp_start"], "end" => host["dhcp_end"])
    out = +""
    formatter = REXML::Formatters::Pretty.new(2)
    formatter.compact = true
    formatter.write(doc, out)
    "#{out}\n"
  end

  def toml_string(value)
    JSON.generate(value) # a JSON string of printable ASCII is a TOML basic string
  end

  def daemon_toml(inv)
    lines = [
      "# /etc/localvmss/localvmssd.toml of the localvmss Vagrant lab, written from vagrant/inventory.json",
      "# by vagrant/lib/localvmss_lab.rb; `vagrant provision controller` writes it again. Every other",
      "# key keeps its default (systemd/localvmssd.toml.example lists them).",
    ]
    inv["hosts"].each do |h|
      lines += [
        "",
        "[[hosts]]",
        "name = #{toml_string(h['name'])}",
        "uri = #{toml_string("qemu+ssh://root@#{h['address']}/system")}",
        "network = #{toml_string(inv['guest_network'])}",
        "zone = #{toml_string(h['zone'])}",
        "serial_log_read_dir = \"\"  # remote: its serial logs stay on #{h['name']}",
      ]
    end
    lines.join("\n") + "\n"
  end

  def ssh_config(inv)
    names = inv["hosts"].flat_map { |h| [h["name"], h["address"]] }.join(" ")
    lines = ["# localvmss Vagrant lab: how the controller's root reaches the KVM hosts (from inventory.json)."]
    inv["hosts"].each { |h| lines += ["Host #{h['name']} #{h['address']}", "    HostName #{h['address']}"] }
    lines += [
      "Host #{names}",
      "    User root",
      "    IdentityFile #{CONTROLLER_KEY_PATH}",
      "    IdentitiesOnly yes",
      "    GlobalKnownHostsFile #{KNOWN_HOSTS_PATH}",
      "    UserKnownHostsFile /dev/null",
      "    StrictHostKeyChecking yes",
      "    BatchMode yes",
    ]
    lines.join("\n") + "\n"
  end

  def public_key(path)
    type, key = File.read("#{path}.pub").split[0, 2]
    unless type && key
      raise Error, "#{path}.pub is not an OpenSSH public key; remove it and its private key to make new ones"
    end

    "#{type} #{key}"
  end

  def routes_file(machine)
    (["# SUBNET VIA: static routes of #{machine['name']} (localvmss-lab-routes applies them)"] +
     machine["routes"].map { |subnet, via| "#{subnet} #{via}" }).join("\n") + "\n"
  end

  def ensure_keypair(path, comment)
    return if File.file?(path) && File.file?("#{path}.pub")

    tmp = "#{path}.new"
    FileUtils.rm_f([tmp, "#{tmp}.pub"])
    made = system("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", tmp,
                  in: File::NULL, out: File::NULL)
    unless made
      FileUtils.rm_f([tmp, "#{tmp}.pub"])
      raise Error, "ssh-keygen was not found: install openssh-client here (it makes the lab's SSH keys)" if made.nil?

      raise Error, "ssh-keygen could not make #{path}"
    end
    File.rename("#{tmp}.pub", "#{path}.pub") # the private key last: both exist only once complete
    File.rename(tmp, path)
  end

  def write_file(path, content, mode = 0o644)
    return if File.file?(path) && File.read(path) == content && (File.stat(path).mode & 0o777) == mode

    tmp = "#{path}.new"
    File.open(tmp, File::WRONLY | File::CREAT | File::TRUNC, mode) { |f| f.write(content) }
    File.chmod(mode, tmp)
    File.rename(tmp, path)
  end

  def private_dir(path)
    FileUtils.mkdir_p(path)
    File.chmod(0o700, path)
    path
  end

  # Writes every machine's files under state/NAME/ (keys made once, the rest rewritten when it
  # changes) and returns the plan, each machine with "files" naming its directory.
  def write_state(lab, state)
    private_dir(state)
    dirs = lab["machines"].to_h { |m| [m["name"], private_dir(File.join(state, m["name"]))] }
    controller = lab["controller"]["name"]
    client_key = File.join(dirs[controller], "id_ed25519")
    ensure_keypair(client_key, CONTROLLER_KEY_COMMENT)
    known = []
    lab["hosts"].each do |h|
      host_key = File.join(dirs[h["name"]], "ssh_host_ed25519_key")
      ensure_keypair(host_key, "root@#{h['name']}")
      known << "#{h['name']},#{h['address']} #{public_key(host_key)}"
      authorized = "from=\"#{lab['controller']['address']}\",restrict,pty #{public_key(client_key)} " \
                   "#{CONTROLLER_KEY_COMMENT}\n"
      write_file(File.join(dirs[h["name"]], "authorized_keys"), authorized)
    end
    lab["machines"].each do |m|
      write_file(File.join(dirs[m["name"]], "routes"), routes_file(m))
      write_file(File.join(dirs[m["name"]], "guest-network.xml"), network_xml(lab, m)) if m["role"] == "kvm-host"
    end
    write_file(File.join(dirs[controller], "known_hosts"), known.join("\n") + "\n")
    write_file(File.join(dirs[controller], "ssh_config"), ssh_config(lab))
    write_file(File.join(dirs[controller], "localvmssd.toml"), daemon_toml(lab))
    lab.merge("machines" => lab["machines"].map { |m| m.merge("files" => dirs[m["name"]]) })
  end

  def prepare(inventory_path, state)
    write_state(plan(Inventory.load(inventory_path)), state)
  end

  def main(argv)
    command, inventory, state = argv
    inventory ||= File.expand_path("../inventory.json", __dir__)
    case command
    when "plan" then puts JSON.pretty_generate(plan(Inventory.load(inventory)))
    when "prepare"
      raise Error, "usage: localvmss_lab.rb prepare INVENTORY STATE_DIR" unless state

      puts JSON.pretty_generate(prepare(inventory, state))
    else
      raise Error, "usage: localvmss_lab.rb plan [INVENTORY] | prepare INVENTORY STATE_DIR"
    end
    0
  rescue Error => e
    warn "localvmss lab: #{e.message}"
    2
  end
end

exit(LocalvmssLab.main(ARGV)) if $PROGRAM_NAME == __FILE__
