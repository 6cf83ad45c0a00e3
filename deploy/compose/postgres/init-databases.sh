#!/bin/sh
# One database and one role per service, each role owning only its own database (as in
# production). Run by the postgres image on its first start, with an empty data volume only:
# a changed password later needs ALTER ROLE, or a fresh volume.
# Passwords come from CARELOOP_DB_PASSWORD_<SERVICE> (docker-compose.yml), the same variables
# the services' database URLs are built from. psql variables (:"name", :'value') quote them, so
# a password never becomes SQL.
set -e

create_service_database() {
    service="$1"
    password="$2"
    if [ -z "$password" ]; then
        echo "no database password for $service" >&2
        exit 1
    fi
    psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v name="careloop_$service" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

create_service_database gateway "$CARELOOP_DB_PASSWORD_GATEWAY"
create_service_database patients "$CARELOOP_DB_PASSWORD_PATIENTS"
create_service_database audit "$CARELOOP_DB_PASSWORD_AUDIT"
create_service_database identity "$CARELOOP_DB_PASSWORD_IDENTITY"
create_service_database scheduling "$CARELOOP_DB_PASSWORD_SCHEDULING"
create_service_database messaging "$CARELOOP_DB_PASSWORD_MESSAGING"
create_service_database referrals "$CARELOOP_DB_PASSWORD_REFERRALS"
create_service_database tasks "$CARELOOP_DB_PASSWORD_TASKS"
create_service_database caregaps "$CARELOOP_DB_PASSWORD_CAREGAPS"
