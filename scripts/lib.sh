# What the scripts that fetch, start and stop local services share. Sourced, never run:
#   . "$(dirname "$0")/lib.sh"
# Messages name the script that sourced it.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
say() { echo "$(basename "$0"): $*" >&2; }

# A loopback port nothing listens on now, below the kernel's ephemeral range: a port from
# that range (what binding port 0 gives) can be taken by any process's outgoing connection
# before the server it was picked for binds it.
free_port() {
  python3 -c '
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
for _ in range(1000):
    port = random.randrange(10000, max(low, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit(1)
' 2>/dev/null && return
  # Without python: random high ports until one refuses a connection.
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    if ! listening "$p"; then echo "$p"; return; fi
  done
  die "no free port found"
}

# Something accepts connections at $1: a loopback port, or HOST:PORT.
listening() {
  local host=127.0.0.1 port=$1
  case "$1" in *:*) host=${1%:*} port=${1##*:} ;; esac
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# The process whose pid is in file $1 is alive, and its command line holds $2 if given
# (a pid reused by another program is not ours).
pid_alive() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null || return 1
  [ -z "${2:-}" ] || ps -p "$pid" -o args= 2>/dev/null | grep -q -- "$2"
}
