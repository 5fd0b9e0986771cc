"""Chinook, the sample music store, as a Django app would model it.

The invoice table keeps Chinook's own mixed-case column names (`db_column`, with field names as
`inspectdb` spells them); the invoice line's `unit_price` is renamed the way a hand-written model
would be (a snake-case field over a mixed-case column). Primary keys are Django's `id`.
"""

from django.db import models


class Genre(models.Model):
    name = models.CharField(max_length=120, null=True)


class MediaType(models.Model):
    name = models.CharField(max_length=120, null=True)


class Artist(models.Model):
    name = models.CharField(max_length=120, null=True)


class Album(models.Model):
    title = models.CharField(max_length=160)
    artist = models.ForeignKey(Artist, on_delete=models.CASCADE)


class Track(models.Model):
    name = models.CharField(max_length=200)
    album = models.ForeignKey(Album, on_delete=models.SET_NULL, null=True)
    media_type = models.ForeignKey(MediaType, on_delete=models.PROTECT)
    genre = models.ForeignKey(Genre, on_delete=models.SET_NULL, null=True)
    composer = models.CharField(max_length=220, null=True)
    milliseconds = models.IntegerField()
    bytes = models.IntegerField(null=True)
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)
    explicit = models.BooleanField(default=False)


class Employee(models.Model):
    last_name = models.CharField(max_length=20)
    first_name = models.CharField(max_length=20)
    title = models.CharField(max_length=30, null=True)
    reports_to = models.ForeignKey("self", on_delete=models.SET_NULL, null=True)
    birth_date = models.DateField(null=True)
    hire_date = models.DateField(null=True)
    address = models.CharField(max_length=70, null=True)
    city = models.CharField(max_length=40, null=True)
    state = models.CharField(max_length=40, null=True)
    country = models.CharField(max_length=40, null=True)
    postal_code = models.CharField(max_length=10, null=True)
    phone = models.CharField(max_length=24, null=True)
    fax = models.CharField(max_length=24, null=True)
    email = models.CharField(max_length=60, null=True)


class Customer(models.Model):
    first_name = models.CharField(max_length=40)
    last_name = models.CharField(max_length=20)
    company = models.CharField(max_length=80, null=True)
    address = models.CharField(max_length=70, null=True)
    city = models.CharField(max_length=40, null=True)
    state = models.CharField(max_length=40, null=True)
    country = models.CharField(max_length=40, null=True)
    postal_code = models.CharField(max_length=10, null=True)
    phone = models.CharField(max_length=24, null=True)
    fax = models.CharField(max_length=24, null=True)
    email = models.CharField(max_length=60)
    support_rep = models.ForeignKey(Employee, on_delete=models.SET_NULL, null=True)
    subscribed = models.BooleanField(default=False)


class Invoice(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, db_column="CustomerId")
    invoicedate = models.DateTimeField(db_column="InvoiceDate")
    billingaddress = models.CharField(max_length=70, null=True, db_column="BillingAddress")
    billingcity = models.CharField(max_length=40, null=True, db_column="BillingCity")
    billingstate = models.CharField(max_length=40, null=True, db_column="BillingState")
    billingcountry = models.CharField(max_length=40, null=True, db_column="BillingCountry")
    billingpostalcode = models.CharField(max_length=10, null=True, db_column="BillingPostalCode")
    total = models.DecimalField(max_digits=10, decimal_places=2, db_column="Total")


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE)
    track = models.ForeignKey(Track, on_delete=models.PROTECT)
    unit_price = models.DecimalField(max_digits=10, decimal_places=2, db_column="UnitPrice")
    quantity = models.IntegerField()


class Playlist(models.Model):
    name = models.CharField(max_length=120, null=True)
    tracks = models.ManyToManyField(Track, through="PlaylistTrack")


class PlaylistTrack(models.Model):
    playlist = models.ForeignKey(Playlist, on_delete=models.CASCADE)
    track = models.ForeignKey(Track, on_delete=models.CASCADE)

    class Meta:
        unique_together = [("playlist", "track")]
