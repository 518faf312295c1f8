-- The reference service's SQLite schema before migrations existed (its models' create_all), the
-- base of examples/fastapi_service/migrations: test_reference_service_migrations.py upgrades it.
CREATE TABLE equipment (
	id INTEGER NOT NULL, 
	tenant_id VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	serial_number VARCHAR, 
	cost VARCHAR, 
	notes VARCHAR, 
	created_by INTEGER, 
	PRIMARY KEY (id)
);
CREATE TABLE inspections (
	id INTEGER NOT NULL, 
	tenant_id VARCHAR(64) NOT NULL, 
	lot_id VARCHAR(64) NOT NULL, 
	station VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	defect_count INTEGER NOT NULL, 
	findings VARCHAR, 
	created_by INTEGER, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME, 
	closed_at DATETIME, 
	PRIMARY KEY (id)
);
CREATE TABLE issued_tokens (
	jti VARCHAR(128) NOT NULL, 
	user_id INTEGER NOT NULL, 
	session_id VARCHAR(128), 
	kind VARCHAR(16) NOT NULL, 
	issued_at DATETIME NOT NULL, 
	expires_at INTEGER NOT NULL, 
	ip VARCHAR(64), 
	user_agent VARCHAR(512), 
	PRIMARY KEY (jti)
);
CREATE TABLE users (
	id INTEGER NOT NULL, 
	username VARCHAR(64) NOT NULL, 
	password_hash VARCHAR(256) NOT NULL, 
	role VARCHAR(256) NOT NULL, 
	tenant_id VARCHAR(64) NOT NULL, 
	email VARCHAR, 
	full_name VARCHAR, 
	phone VARCHAR, 
	created_at DATETIME, 
	anonymized_at DATETIME, 
	totp_pending TEXT, 
	totp_sealed TEXT, 
	backup_codes TEXT, 
	PRIMARY KEY (id), 
	UNIQUE (username)
);
CREATE INDEX ix_equipment_created_by ON equipment (created_by);
CREATE INDEX ix_equipment_tenant_id ON equipment (tenant_id);
CREATE INDEX ix_inspections_created_by ON inspections (created_by);
CREATE INDEX ix_inspections_tenant_id ON inspections (tenant_id);
CREATE INDEX ix_issued_tokens_user_id ON issued_tokens (user_id);
