# OpenBao server for docker-compose.yml: integrated (raft) storage on the openbao-data volume,
# so transit keys and secrets survive restarts; TLS with the local development CA's
# certificate. Initialised and unsealed by the vault-init container (one key share, local
# development only; production uses auto-unseal).

storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao-compose"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/openbao/tls/openbao.crt"
  tls_key_file    = "/openbao/tls/openbao.key"
  tls_min_version = "tls12"
}

api_addr     = "https://openbao:8200"
cluster_addr = "https://openbao:8201"

# Integrated storage is memory-mapped; mlock would need IPC_LOCK and is advised against with
# raft.
disable_mlock = true
ui            = false
