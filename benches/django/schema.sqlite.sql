-- Django 5.2's `manage.py sqlmigrate chinook 0001` for benches/django/app, its BEGIN; and COMMIT; removed
-- (`benches/django/run schema` writes it again).
--
-- Create model Artist
--
CREATE TABLE "chinook_artist" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(120) NULL);
--
-- Create model Genre
--
CREATE TABLE "chinook_genre" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(120) NULL);
--
-- Create model MediaType
--
CREATE TABLE "chinook_mediatype" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(120) NULL);
--
-- Create model Playlist
--
CREATE TABLE "chinook_playlist" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(120) NULL);
--
-- Create model Album
--
CREATE TABLE "chinook_album" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "title" varchar(160) NOT NULL, "artist_id" integer NOT NULL REFERENCES "chinook_artist" ("id") DEFERRABLE INITIALLY DEFERRED);
--
-- Create model Employee
--
CREATE TABLE "chinook_employee" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "last_name" varchar(20) NOT NULL, "first_name" varchar(20) NOT NULL, "title" varchar(30) NULL, "birth_date" date NULL, "hire_date" date NULL, "address" varchar(70) NULL, "city" varchar(40) NULL, "state" varchar(40) NULL, "country" varchar(40) NULL, "postal_code" varchar(10) NULL, "phone" varchar(24) NULL, "fax" varchar(24) NULL, "email" varchar(60) NULL, "reports_to_id" integer NULL REFERENCES "chinook_employee" ("id") DEFERRABLE INITIALLY DEFERRED);
--
-- Create model Customer
--
CREATE TABLE "chinook_customer" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "first_name" varchar(40) NOT NULL, "last_name" varchar(20) NOT NULL, "company" varchar(80) NULL, "address" varchar(70) NULL, "city" varchar(40) NULL, "state" varchar(40) NULL, "country" varchar(40) NULL, "postal_code" varchar(10) NULL, "phone" varchar(24) NULL, "fax" varchar(24) NULL, "email" varchar(60) NOT NULL, "subscribed" bool NOT NULL, "support_rep_id" integer NULL REFERENCES "chinook_employee" ("id") DEFERRABLE INITIALLY DEFERRED);
--
-- Create model Invoice
--
CREATE TABLE "chinook_invoice" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "InvoiceDate" datetime NOT NULL, "BillingAddress" varchar(70) NULL, "BillingCity" varchar(40) NULL, "BillingState" varchar(40) NULL, "BillingCountry" varchar(40) NULL, "BillingPostalCode" varchar(10) NULL, "Total" decimal NOT NULL, "CustomerId" integer NOT NULL REFERENCES "chinook_customer" ("id") DEFERRABLE INITIALLY DEFERRED);
--
-- Create model Track
--
CREATE TABLE "chinook_track" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(200) NOT NULL, "composer" varchar(220) NULL, "milliseconds" integer NOT NULL, "bytes" integer NULL, "unit_price" decimal NOT NULL, "explicit" bool NOT NULL, "album_id" integer NULL REFERENCES "chinook_album" ("id") DEFERRABLE INITIALLY DEFERRED, "genre_id" integer NULL REFERENCES "chinook_genre" ("id") DEFERRABLE INITIALLY DEFERRED, "media_type_id" integer NOT NULL REFERENCES "chinook_mediatype" ("id") DEFERRABLE INITIALLY DEFERRED);
--
-- Create model PlaylistTrack
--
CREATE TABLE "chinook_playlisttrack" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "playlist_id" integer NOT NULL REFERENCES "chinook_playlist" ("id") DEFERRABLE INITIALLY DEFERRED, "track_id" integer NOT NULL REFERENCES "chinook_track" ("id") DEFERRABLE INITIALLY DEFERRED);
--
-- Add field tracks to playlist
--
CREATE TABLE "new__chinook_playlist" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "name" varchar(120) NULL);
INSERT INTO "new__chinook_playlist" ("id", "name") SELECT "id", "name" FROM "chinook_playlist";
DROP TABLE "chinook_playlist";
ALTER TABLE "new__chinook_playlist" RENAME TO "chinook_playlist";
CREATE INDEX "chinook_album_artist_id_149f88b2" ON "chinook_album" ("artist_id");
CREATE INDEX "chinook_employee_reports_to_id_7168f5d1" ON "chinook_employee" ("reports_to_id");
CREATE INDEX "chinook_customer_support_rep_id_01681e8b" ON "chinook_customer" ("support_rep_id");
CREATE INDEX "chinook_invoice_CustomerId_6a196cc5" ON "chinook_invoice" ("CustomerId");
CREATE INDEX "chinook_track_album_id_313d0fbd" ON "chinook_track" ("album_id");
CREATE INDEX "chinook_track_genre_id_d9f01550" ON "chinook_track" ("genre_id");
CREATE INDEX "chinook_track_media_type_id_c1726a6d" ON "chinook_track" ("media_type_id");
CREATE UNIQUE INDEX "chinook_playlisttrack_playlist_id_track_id_fda263a3_uniq" ON "chinook_playlisttrack" ("playlist_id", "track_id");
CREATE INDEX "chinook_playlisttrack_playlist_id_1814f07f" ON "chinook_playlisttrack" ("playlist_id");
CREATE INDEX "chinook_playlisttrack_track_id_34e2be42" ON "chinook_playlisttrack" ("track_id");
--
-- Create model InvoiceLine
--
CREATE TABLE "chinook_invoiceline" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "UnitPrice" decimal NOT NULL, "quantity" integer NOT NULL, "invoice_id" integer NOT NULL REFERENCES "chinook_invoice" ("id") DEFERRABLE INITIALLY DEFERRED, "track_id" integer NOT NULL REFERENCES "chinook_track" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE INDEX "chinook_invoiceline_invoice_id_0df639f8" ON "chinook_invoiceline" ("invoice_id");
CREATE INDEX "chinook_invoiceline_track_id_b729568b" ON "chinook_invoiceline" ("track_id");
