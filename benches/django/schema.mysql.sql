-- Django 5.2's `manage.py sqlmigrate chinook 0001` for benches/django/app, its BEGIN; and COMMIT; removed
-- (`benches/django/run schema` writes it again).
--
-- Create model Artist
--
CREATE TABLE `chinook_artist` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `name` varchar(120) NULL);
--
-- Create model Genre
--
CREATE TABLE `chinook_genre` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `name` varchar(120) NULL);
--
-- Create model MediaType
--
CREATE TABLE `chinook_mediatype` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `name` varchar(120) NULL);
--
-- Create model Playlist
--
CREATE TABLE `chinook_playlist` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `name` varchar(120) NULL);
--
-- Create model Album
--
CREATE TABLE `chinook_album` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `title` varchar(160) NOT NULL, `artist_id` integer NOT NULL);
--
-- Create model Employee
--
CREATE TABLE `chinook_employee` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `last_name` varchar(20) NOT NULL, `first_name` varchar(20) NOT NULL, `title` varchar(30) NULL, `birth_date` date NULL, `hire_date` date NULL, `address` varchar(70) NULL, `city` varchar(40) NULL, `state` varchar(40) NULL, `country` varchar(40) NULL, `postal_code` varchar(10) NULL, `phone` varchar(24) NULL, `fax` varchar(24) NULL, `email` varchar(60) NULL, `reports_to_id` integer NULL);
--
-- Create model Customer
--
CREATE TABLE `chinook_customer` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `first_name` varchar(40) NOT NULL, `last_name` varchar(20) NOT NULL, `company` varchar(80) NULL, `address` varchar(70) NULL, `city` varchar(40) NULL, `state` varchar(40) NULL, `country` varchar(40) NULL, `postal_code` varchar(10) NULL, `phone` varchar(24) NULL, `fax` varchar(24) NULL, `email` varchar(60) NOT NULL, `subscribed` bool NOT NULL, `support_rep_id` integer NULL);
--
-- Create model Invoice
--
CREATE TABLE `chinook_invoice` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `InvoiceDate` datetime(6) NOT NULL, `BillingAddress` varchar(70) NULL, `BillingCity` varchar(40) NULL, `BillingState` varchar(40) NULL, `BillingCountry` varchar(40) NULL, `BillingPostalCode` varchar(10) NULL, `Total` numeric(10, 2) NOT NULL, `CustomerId` integer NOT NULL);
--
-- Create model Track
--
CREATE TABLE `chinook_track` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `name` varchar(200) NOT NULL, `composer` varchar(220) NULL, `milliseconds` integer NOT NULL, `bytes` integer NULL, `unit_price` numeric(10, 2) NOT NULL, `explicit` bool NOT NULL, `album_id` integer NULL, `genre_id` integer NULL, `media_type_id` integer NOT NULL);
--
-- Create model PlaylistTrack
--
CREATE TABLE `chinook_playlisttrack` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `playlist_id` integer NOT NULL, `track_id` integer NOT NULL);
--
-- Add field tracks to playlist
--
-- (no-op)
--
-- Create model InvoiceLine
--
CREATE TABLE `chinook_invoiceline` (`id` integer AUTO_INCREMENT NOT NULL PRIMARY KEY, `UnitPrice` numeric(10, 2) NOT NULL, `quantity` integer NOT NULL, `invoice_id` integer NOT NULL, `track_id` integer NOT NULL);
ALTER TABLE `chinook_album` ADD CONSTRAINT `chinook_album_artist_id_149f88b2_fk_chinook_artist_id` FOREIGN KEY (`artist_id`) REFERENCES `chinook_artist` (`id`);
ALTER TABLE `chinook_employee` ADD CONSTRAINT `chinook_employee_reports_to_id_7168f5d1_fk_chinook_employee_id` FOREIGN KEY (`reports_to_id`) REFERENCES `chinook_employee` (`id`);
ALTER TABLE `chinook_customer` ADD CONSTRAINT `chinook_customer_support_rep_id_01681e8b_fk_chinook_employee_id` FOREIGN KEY (`support_rep_id`) REFERENCES `chinook_employee` (`id`);
ALTER TABLE `chinook_invoice` ADD CONSTRAINT `chinook_invoice_CustomerId_6a196cc5_fk_chinook_customer_id` FOREIGN KEY (`CustomerId`) REFERENCES `chinook_customer` (`id`);
ALTER TABLE `chinook_track` ADD CONSTRAINT `chinook_track_album_id_313d0fbd_fk_chinook_album_id` FOREIGN KEY (`album_id`) REFERENCES `chinook_album` (`id`);
ALTER TABLE `chinook_track` ADD CONSTRAINT `chinook_track_genre_id_d9f01550_fk_chinook_genre_id` FOREIGN KEY (`genre_id`) REFERENCES `chinook_genre` (`id`);
ALTER TABLE `chinook_track` ADD CONSTRAINT `chinook_track_media_type_id_c1726a6d_fk_chinook_mediatype_id` FOREIGN KEY (`media_type_id`) REFERENCES `chinook_mediatype` (`id`);
ALTER TABLE `chinook_playlisttrack` ADD CONSTRAINT `chinook_playlisttrack_playlist_id_track_id_fda263a3_uniq` UNIQUE (`playlist_id`, `track_id`);
ALTER TABLE `chinook_playlisttrack` ADD CONSTRAINT `chinook_playlisttrac_playlist_id_1814f07f_fk_chinook_p` FOREIGN KEY (`playlist_id`) REFERENCES `chinook_playlist` (`id`);
ALTER TABLE `chinook_playlisttrack` ADD CONSTRAINT `chinook_playlisttrack_track_id_34e2be42_fk_chinook_track_id` FOREIGN KEY (`track_id`) REFERENCES `chinook_track` (`id`);
ALTER TABLE `chinook_invoiceline` ADD CONSTRAINT `chinook_invoiceline_invoice_id_0df639f8_fk_chinook_invoice_id` FOREIGN KEY (`invoice_id`) REFERENCES `chinook_invoice` (`id`);
ALTER TABLE `chinook_invoiceline` ADD CONSTRAINT `chinook_invoiceline_track_id_b729568b_fk_chinook_track_id` FOREIGN KEY (`track_id`) REFERENCES `chinook_track` (`id`);
