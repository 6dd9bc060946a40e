-- One cache database per storage element (docker-compose.yml runs this once, on an empty
-- PostgreSQL volume). Each database is only a cache: `artstore storage-element
-- rebuild-cache` refills it from the element's files.
CREATE DATABASE artstore_se_1;
CREATE DATABASE artstore_se_2;
